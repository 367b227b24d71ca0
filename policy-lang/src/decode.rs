//! YAML nodes to IR: the schema of the three policy kinds.
//!
//! Decoding checks what the API server's schema checks (field names, types,
//! enums, required fields) and nothing more; semantic rules that Cilium's
//! agent applies live in [`crate::validate`]. It never stops at the first
//! problem: a field that fails to decode is left out of the IR, a diagnostic
//! is recorded, and decoding carries on so a run reports every problem.

use crate::diag::{Code, Diagnostic};
use crate::ir::*;
use crate::source::{FileId, Loc, Span, Spanned};
use crate::suggest::did_you_mean;
use crate::yaml::{Node, NodeKind, Value};
use std::collections::BTreeMap;

pub(crate) struct Decoder<'a> {
    pub diags: &'a mut Vec<Diagnostic>,
}

/// The known fields of one mapping, looked up by name.
pub(crate) struct Fields<'n> {
    entries: Vec<(&'static str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The field's value, or `None` when absent or `null`.
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, v)| *v)
            .filter(|v| !v.is_null())
    }

    pub fn key_span(&self, name: &str) -> Option<Span> {
        self.entries
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, k, _)| k.span)
    }
}

/// The outcome of decoding one document or List item.
pub(crate) enum Decoded {
    Policy(Box<Policy>),
    /// A List wrapper; its items were decoded on their own.
    List,
    /// An object of a kind sluice does not handle (a Deployment, ...).
    Skipped,
    /// A network policy of a kind sluice does not model (its kind, and
    /// where): its effect is missing from every result.
    Unmodelled(String, Span),
    /// An empty document, or a policy too broken to represent.
    Nothing,
}

/// A list of Cilium rules as `cilium policy import` takes them: a
/// sequence whose items are all mappings with an `endpointSelector` or a
/// `nodeSelector` (and no `kind`).
fn agent_rules(root: &Node) -> Option<&[Node]> {
    let NodeKind::Seq(items) = &root.kind else {
        return None;
    };
    let is_rule = |n: &Node| {
        matches!(n.kind, NodeKind::Map(_))
            && n.get("kind").is_none()
            && (n.get("endpointSelector").is_some() || n.get("nodeSelector").is_some())
    };
    (!items.is_empty() && items.iter().all(is_rule)).then_some(items.as_slice())
}

/// Network policy kinds of other projects, which change what a cluster
/// enforces but which sluice does not model.
fn is_unmodelled_policy(group: &str, kind: &str) -> bool {
    match group {
        "policy.networking.k8s.io" => matches!(
            kind,
            "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" | "ClusterNetworkPolicy"
        ),
        "projectcalico.org" | "crd.projectcalico.org" => matches!(
            kind,
            "NetworkPolicy"
                | "GlobalNetworkPolicy"
                | "StagedNetworkPolicy"
                | "StagedGlobalNetworkPolicy"
                | "StagedKubernetesNetworkPolicy"
        ),
        "security.istio.io" => kind == "AuthorizationPolicy",
        _ => false,
    }
}

fn article(type_name: &str) -> &'static str {
    match type_name {
        "integer" => "an integer",
        "object" => "an object",
        "list" => "a list",
        "boolean" => "a boolean",
        "string" => "a string",
        "number" => "a number",
        _ => "null",
    }
}

const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
];

impl Decoder<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn type_error(&mut self, node: &Node, expected: &str) {
        let found = node.type_name();
        let mut d = Diagnostic::error(
            Code::TypeMismatch,
            node.span,
            format!("expected {expected}, found {}", article(found)),
        )
        .with_label(format!("this is {}", article(found)));
        if expected == "a string" {
            if let Some(s) = node.as_scalar() {
                let yaml11 = found == "boolean"
                    && !matches!(s.text.to_ascii_lowercase().as_str(), "true" | "false");
                d = d.with_help(if yaml11 {
                    format!(
                        "Kubernetes reads YAML 1.1, where `{}` means a boolean; quote the value: `\"{}\"`",
                        s.text, s.text
                    )
                } else {
                    format!("quote the value: `\"{}\"`", s.text)
                });
            }
        }
        self.push(d);
    }

    /// A mapping with the given known fields; unknown and duplicate keys are
    /// reported.
    pub fn object<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        fields: &[&'static str],
    ) -> Option<Fields<'n>> {
        let NodeKind::Map(entries) = &node.kind else {
            self.type_error(node, "an object");
            return None;
        };
        let mut out: Vec<(&'static str, &'n Node, &'n Node)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(key) = k.as_scalar() else {
                self.type_error(k, "a string key");
                continue;
            };
            let name = key.text.as_str();
            match fields.iter().find(|f| **f == name) {
                Some(f) => {
                    if let Some((_, first, _)) = out.iter().find(|(n, _, _)| n == f) {
                        let first = first.span;
                        self.push(
                            Diagnostic::error(
                                Code::DuplicateKey,
                                k.span,
                                format!("duplicate field `{name}` in {what}"),
                            )
                            .with_label("set again here")
                            .with_related(first, "first set here")
                            .with_help(
                                "remove one of the two; the API server rejects duplicate fields",
                            ),
                        );
                    } else {
                        out.push((f, k, v));
                    }
                }
                None => self.unknown_field(k.span, name, what, fields),
            }
        }
        Some(Fields { entries: out })
    }

    fn unknown_field(&mut self, span: Span, name: &str, what: &str, fields: &[&str]) {
        let mut d = Diagnostic::error(
            Code::UnknownField,
            span,
            format!("unknown field `{name}` in {what}"),
        )
        .with_label("not a field of this object");
        let visible: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|f| !METADATA_FIELDS[4..].contains(f) && *f != "status")
            .collect();
        d = match did_you_mean(name, &visible) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help(format!("known fields: {}", visible.join(", "))),
        };
        self.push(d);
    }

    pub fn list<'n>(&mut self, node: &'n Node) -> Option<&'n [Node]> {
        match &node.kind {
            NodeKind::Seq(items) => Some(items),
            _ => {
                self.type_error(node, "a list");
                None
            }
        }
    }

    /// Decodes each element of an optional list; `None` when absent.
    fn list_of<T>(
        &mut self,
        node: Option<&Node>,
        mut f: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.list(node?)?;
        Some(items.iter().filter_map(|n| f(self, n)).collect())
    }

    pub fn string(&mut self, node: &Node) -> Option<Spanned<String>> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Value::Str(s)) => Some(Spanned::new(s.to_owned(), node.span)),
            _ => {
                self.type_error(node, "a string");
                None
            }
        }
    }

    fn opt_string(&mut self, node: Option<&Node>) -> Option<Spanned<String>> {
        self.string(node?)
    }

    fn int(&mut self, node: &Node) -> Option<Spanned<i64>> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Value::Int(i)) => Some(Spanned::new(i, node.span)),
            _ => {
                self.type_error(node, "an integer");
                None
            }
        }
    }

    fn bool(&mut self, node: Option<&Node>) -> Option<bool> {
        let node = node?;
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Value::Bool(b)) => Some(b),
            _ => {
                self.type_error(node, "a boolean");
                None
            }
        }
    }

    fn string_list(&mut self, node: Option<&Node>) -> Option<Vec<Spanned<String>>> {
        self.list_of(node, |d, n| d.string(n))
    }

    fn string_map(&mut self, node: Option<&Node>, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(node) = node else { return out };
        let NodeKind::Map(entries) = &node.kind else {
            self.type_error(node, "an object");
            return out;
        };
        for (k, v) in entries {
            let (Some(k), Some(v)) = (self.string(k), self.string(v)) else {
                continue;
            };
            if out.insert(k.value.clone(), v.value).is_some() {
                self.push(Diagnostic::error(
                    Code::DuplicateKey,
                    k.span(),
                    format!("duplicate key `{}` in {what}", k.value),
                ));
            }
        }
        out
    }

    /// A string from a fixed set, with a "did you mean" on a miss.
    fn name_of<T>(
        &mut self,
        node: &Node,
        what: &str,
        names: &[&str],
        parse: impl Fn(&str) -> Option<T>,
        code: Code,
    ) -> Option<Spanned<T>> {
        let s = self.string(node)?;
        if let Some(v) = parse(&s.value) {
            return Some(Spanned::new(v, node.span));
        }
        let mut d = Diagnostic::error(code, node.span, format!("unsupported {what} `{}`", s.value))
            .with_label(format!("not a valid {what}"));
        d = match did_you_mean(&s.value, names) {
            Some(m) => d.with_help(format!("did you mean `{m}`?")),
            None => d.with_help(format!("supported values: {}", names.join(", "))),
        };
        self.push(d);
        None
    }

    /// An entity name as the CRD's enum admits it (see [`Entity::in_crd`]).
    fn entity(&mut self, node: &Node) -> Option<Spanned<Entity>> {
        // The names a suggestion may offer, worked out once.
        static CRD: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        let crd = CRD.get_or_init(|| {
            Entity::NAMES
                .iter()
                .copied()
                .filter(|n| Entity::parse(n).is_some_and(Entity::in_crd))
                .collect()
        });
        let e = self.name_of(node, "entity", crd, Entity::parse, Code::UnknownEntity)?;
        if !e.value.in_crd() {
            let cidr = if e.value == Entity::WorldIpv4 {
                "0.0.0.0/0"
            } else {
                "::/0"
            };
            self.push(
                Diagnostic::error(
                    Code::UnknownEntity,
                    node.span,
                    format!("entity `{}` is not in the CRD's list of entities", e.value),
                )
                .with_label("the API server rejects this value")
                .with_help(format!(
                    "write `world` for both families, or a CIDR rule `{cidr}` for this family only"
                )),
            );
            return None;
        }
        Some(e)
    }

    // -----------------------------------------------------------------------
    // Documents

    /// Decodes one document (or List item).
    pub fn document(&mut self, root: &Node, file: FileId) -> Decoded {
        if root.is_null() {
            return Decoded::Nothing;
        }
        if let Some(rules) = agent_rules(root) {
            return self.imported_rules(root, rules, file);
        }
        if !matches!(root.kind, NodeKind::Map(_)) {
            self.push(
                Diagnostic::error(
                    Code::NotAnObject,
                    root.span,
                    format!(
                        "expected a Kubernetes object, found {}",
                        article(root.type_name())
                    ),
                )
                .with_help(
                    "each YAML document must be a mapping with `apiVersion`, `kind` and `metadata`",
                ),
            );
            return Decoded::Nothing;
        }
        let api_version = self.type_meta(root, "apiVersion");
        let kind = self.type_meta(root, "kind");
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return Decoded::Nothing;
        };
        if kind.value.ends_with("List") {
            self.object(root, "a List", &["apiVersion", "kind", "metadata", "items"]);
            return Decoded::List;
        }
        let group = api_version.value.split_once('/').map_or("", |(g, _)| g);
        let pkind = match kind.value.as_str() {
            "CiliumNetworkPolicy" if group == "cilium.io" => PolicyKind::CiliumNetworkPolicy,
            "CiliumClusterwideNetworkPolicy" if group == "cilium.io" => {
                PolicyKind::CiliumClusterwideNetworkPolicy
            }
            "NetworkPolicy" if matches!(group, "networking.k8s.io" | "extensions") => {
                PolicyKind::NetworkPolicy
            }
            k if is_unmodelled_policy(group, k) => {
                return Decoded::Unmodelled(format!("{k} ({group})"), kind.span())
            }
            _ => return Decoded::Skipped,
        };
        if api_version.value != pkind.api_version() {
            self.push(
                Diagnostic::error(
                    Code::UnsupportedApiVersion,
                    api_version.span(),
                    format!("`{}` is not served for {}", api_version.value, kind.value),
                )
                .with_label("legacy API version")
                .with_help(format!(
                    "use `apiVersion: {}`; current clusters reject this version",
                    pkind.api_version()
                )),
            );
        }
        self.policy(root, pkind, file)
            .map_or(Decoded::Nothing, |p| Decoded::Policy(Box::new(p)))
    }

    /// The rules of a `cilium policy import` file: one policy per file, of
    /// cluster-wide scope (imported rules are not confined to a namespace,
    /// as a CCNP's are not), named after the file by the caller (the name
    /// is left empty here). They are checked as a CCNP's rules are, so
    /// that a rule means the same whichever way it is applied.
    fn imported_rules(&mut self, root: &Node, rules: &[Node], file: FileId) -> Decoded {
        let kind = PolicyKind::CiliumClusterwideNetworkPolicy;
        let specs: Vec<Rule> = rules.iter().filter_map(|n| self.rule(n, kind)).collect();
        Decoded::Policy(Box::new(Policy {
            kind,
            name: Spanned::new(
                String::new(),
                Span {
                    end: root.span.start,
                    ..root.span
                },
            ),
            namespace: None,
            labels: Default::default(),
            annotations: Default::default(),
            file,
            loc: Loc(root.span),
            body: PolicyBody::Cilium(CiliumSpec {
                spec: None,
                specs: Some(specs),
            }),
        }))
    }

    /// Reads `apiVersion` or `kind`, catching a misspelt key (`apiversion`).
    fn type_meta(&mut self, root: &Node, field: &str) -> Option<Spanned<String>> {
        if let Some(v) = root.get(field) {
            return self.string(v);
        }
        let NodeKind::Map(entries) = &root.kind else {
            return None;
        };
        let near = entries.iter().find(|(k, _)| {
            k.as_scalar()
                .is_some_and(|s| did_you_mean(&s.text, &[field]).is_some())
        });
        match near {
            // The misspelt key is reported as an unknown field later; read
            // its value so the rest of the object is still checked.
            Some((_, v)) => self.string(v),
            None => {
                self.push(
                    Diagnostic::error(
                        Code::MissingTypeMeta,
                        Span {
                            end: root.span.start,
                            ..root.span
                        },
                        format!("object has no `{field}`"),
                    )
                    .with_label(format!("`{field}` missing in this object"))
                    .with_help("every Kubernetes object needs `apiVersion` and `kind`"),
                );
                None
            }
        }
    }

    fn policy(&mut self, root: &Node, kind: PolicyKind, file: FileId) -> Option<Policy> {
        let cilium = kind != PolicyKind::NetworkPolicy;
        let fields: &[&'static str] = if cilium {
            &[
                "apiVersion",
                "kind",
                "metadata",
                "spec",
                "specs",
                "status",
                "description",
            ]
        } else {
            &["apiVersion", "kind", "metadata", "spec", "status"]
        };
        let what = format!("a {kind}");
        let f = self.object(root, &what, fields)?;
        if let Some(span) = f.key_span("description") {
            // The CRD has no top-level `description`: with strict field
            // validation (kubectl's default since 1.27) the API server
            // refuses the object ("strict decoding error: unknown field").
            self.push(
                Diagnostic::error(
                    Code::MisplacedDescription,
                    span,
                    "`description` at the top level is not part of the schema: the API server refuses the object",
                )
                .with_label("unknown field")
                .with_help("move it under `spec` (spec.description); with `kubectl apply --validate=false` it would be dropped instead"),
            );
        }
        let Some(meta) = f.get("metadata") else {
            self.push(
                Diagnostic::error(
                    Code::MissingField,
                    root.span.to(root.span),
                    format!("{kind} has no `metadata`"),
                )
                .with_help("add `metadata: {name: ...}`"),
            );
            return None;
        };
        let m = self.object(meta, "metadata", METADATA_FIELDS)?;
        let name = match m.get("name") {
            Some(n) => self.string(n)?,
            None => {
                self.push(
                    Diagnostic::error(
                        Code::MissingField,
                        m.key_span("name").unwrap_or(meta.span),
                        "metadata has no `name`",
                    )
                    .with_help("every policy needs a name (generateName is not supported)"),
                );
                return None;
            }
        };
        let namespace = self.opt_string(m.get("namespace"));
        let labels = self.string_map(m.get("labels"), "metadata.labels");
        let annotations = self.string_map(m.get("annotations"), "metadata.annotations");
        let namespace = match namespace {
            Some(ns) if !kind.is_namespaced() => {
                self.push(
                    Diagnostic::warning(
                        Code::IgnoredNamespace,
                        ns.span(),
                        format!("{kind} is cluster-scoped; `metadata.namespace` is ignored"),
                    )
                    .with_label("ignored")
                    .with_help("remove the namespace, or use a CiliumNetworkPolicy to scope the rules to it"),
                );
                None
            }
            other => other,
        };
        let body = if cilium {
            let spec = f.get("spec").and_then(|n| self.rule(n, kind));
            let specs = self.list_of(f.get("specs"), |d, n| d.rule(n, kind));
            if f.get("spec").is_none() && f.get("specs").is_none() {
                self.push(
                    Diagnostic::error(
                        Code::EmptySpec,
                        name.span(),
                        format!("{kind} `{}` has neither `spec` nor `specs`", name.value),
                    )
                    .with_label("this policy has no rules")
                    .with_help("add a `spec:` with an endpointSelector and at least one rule list"),
                );
            }
            PolicyBody::Cilium(CiliumSpec { spec, specs })
        } else {
            let Some(spec) = f.get("spec") else {
                self.push(
                    Diagnostic::error(
                        Code::MissingField,
                        name.span(),
                        "NetworkPolicy has no `spec`",
                    )
                    .with_help("add `spec: {podSelector: {}}` at least"),
                );
                return None;
            };
            PolicyBody::Kubernetes(self.knp_spec(spec)?)
        };
        Some(Policy {
            kind,
            name,
            namespace,
            labels,
            annotations,
            file,
            loc: Loc(root.span),
            body,
        })
    }

    // -----------------------------------------------------------------------
    // Cilium rules

    fn rule(&mut self, node: &Node, kind: PolicyKind) -> Option<Rule> {
        let f = self.object(
            node,
            &format!("a {kind} rule"),
            &[
                "endpointSelector",
                "nodeSelector",
                "ingress",
                "ingressDeny",
                "egress",
                "egressDeny",
                "labels",
                "description",
                "enableDefaultDeny",
                "log",
            ],
        )?;
        let endpoint_selector = f.get("endpointSelector").and_then(|n| self.selector(n));
        let node_selector = f.get("nodeSelector").and_then(|n| self.selector(n));
        let ingress = self.list_of(f.get("ingress"), |d, n| {
            d.peer_rule(n, Direction::Ingress, Action::Allow)
        });
        let ingress_deny = self.list_of(f.get("ingressDeny"), |d, n| {
            d.peer_rule(n, Direction::Ingress, Action::Deny)
        });
        let egress = self.list_of(f.get("egress"), |d, n| {
            d.peer_rule(n, Direction::Egress, Action::Allow)
        });
        let egress_deny = self.list_of(f.get("egressDeny"), |d, n| {
            d.peer_rule(n, Direction::Egress, Action::Deny)
        });
        let labels = self.list_of(f.get("labels"), |d, n| {
            let l = d.object(n, "a rule label", &["key", "value", "source"])?;
            let key = match l.get("key") {
                Some(k) => d.string(k)?.value,
                None => {
                    d.push(Diagnostic::error(
                        Code::MissingField,
                        n.span,
                        "rule label has no `key`",
                    ));
                    return None;
                }
            };
            Some(RuleLabel {
                key,
                value: d.opt_string(l.get("value")).map(|s| s.value),
                source: d.opt_string(l.get("source")).map(|s| s.value),
            })
        });
        let description = self.opt_string(f.get("description"));
        let enable_default_deny = f.get("enableDefaultDeny").and_then(|n| {
            let e = self.object(n, "enableDefaultDeny", &["ingress", "egress"])?;
            Some(DefaultDeny {
                ingress: self.bool(e.get("ingress")),
                egress: self.bool(e.get("egress")),
            })
        });
        let log = f.get("log").and_then(|n| {
            let l = self.object(n, "log", &["value"])?;
            self.opt_string(l.get("value"))
        });
        Some(Rule {
            loc: Loc(node.span),
            endpoint_selector,
            node_selector,
            ingress,
            ingress_deny,
            egress,
            egress_deny,
            labels,
            description,
            enable_default_deny,
            log,
        })
    }

    fn peer_rule(&mut self, node: &Node, dir: Direction, action: Action) -> Option<PeerRule> {
        let fields: &[&'static str] = match (dir, action) {
            (Direction::Ingress, Action::Allow) => &[
                "fromEndpoints",
                "fromRequires",
                "fromCIDR",
                "fromCIDRSet",
                "fromEntities",
                "fromNodes",
                "fromGroups",
                "toPorts",
                "icmps",
                "authentication",
            ],
            (Direction::Ingress, Action::Deny) => &[
                "fromEndpoints",
                "fromRequires",
                "fromCIDR",
                "fromCIDRSet",
                "fromEntities",
                "fromNodes",
                "fromGroups",
                "toPorts",
                "icmps",
            ],
            (Direction::Egress, Action::Allow) => &[
                "toEndpoints",
                "toRequires",
                "toCIDR",
                "toCIDRSet",
                "toEntities",
                "toServices",
                "toNodes",
                "toGroups",
                "toFQDNs",
                "toPorts",
                "icmps",
                "authentication",
            ],
            (Direction::Egress, Action::Deny) => &[
                "toEndpoints",
                "toRequires",
                "toCIDR",
                "toCIDRSet",
                "toEntities",
                "toServices",
                "toNodes",
                "toGroups",
                "toPorts",
                "icmps",
            ],
        };
        let list = dir.list_name(action);
        let f = self.object(node, &format!("an `{list}` rule"), fields)?;
        let p = dir.peer_prefix();
        let get = |name: &str| f.get(&format!("{p}{name}"));
        Some(PeerRule {
            loc: Loc(node.span),
            endpoints: self.list_of(get("Endpoints"), |d, n| d.selector(n)),
            requires: self.list_of(get("Requires"), |d, n| d.selector(n)),
            cidr: self.list_of(get("CIDR"), |d, n| d.cidr(n)),
            cidr_set: self.list_of(get("CIDRSet"), |d, n| d.cidr_rule(n)),
            entities: self.list_of(get("Entities"), |d, n| d.entity(n)),
            nodes: self.list_of(get("Nodes"), |d, n| d.selector(n)),
            groups: self.list_of(get("Groups"), |d, n| d.group(n)),
            services: self.list_of(f.get("toServices"), |d, n| d.service(n)),
            fqdns: self.list_of(f.get("toFQDNs"), |d, n| {
                d.fqdn_selector(n, "a toFQDNs selector")
            }),
            to_ports: self.list_of(f.get("toPorts"), |d, n| d.port_rule(n, action)),
            icmps: self.list_of(f.get("icmps"), |d, n| d.icmp_rule(n)),
            authentication: f.get("authentication").and_then(|n| {
                let a = self.object(n, "authentication", &["mode"])?;
                match a.get("mode") {
                    Some(m) => self.name_of(
                        m,
                        "authentication mode",
                        AuthMode::NAMES,
                        AuthMode::parse,
                        Code::InvalidValue,
                    ),
                    None => {
                        self.push(Diagnostic::error(
                            Code::MissingField,
                            n.span,
                            "authentication has no `mode`",
                        ));
                        None
                    }
                }
            }),
        })
    }

    pub fn selector(&mut self, node: &Node) -> Option<Selector> {
        let f = self.object(
            node,
            "a label selector",
            &["matchLabels", "matchExpressions"],
        )?;
        let mut match_labels = Vec::new();
        if let Some(ml) = f.get("matchLabels") {
            if let NodeKind::Map(entries) = &ml.kind {
                for (k, v) in entries {
                    let (Some(k), Some(v)) = (self.string(k), self.string(v)) else {
                        continue;
                    };
                    let key = k.map(|k| LabelKey::parse(&k));
                    if let Some((first, _)) = match_labels.iter().find(
                        |(fk, _): &&(Spanned<LabelKey>, Spanned<String>)| fk.value == key.value,
                    ) {
                        let first = first.span();
                        self.push(
                            Diagnostic::error(
                                Code::DuplicateKey,
                                key.span(),
                                format!("duplicate label `{}` in matchLabels", key.value),
                            )
                            .with_related(first, "first set here"),
                        );
                        continue;
                    }
                    match_labels.push((key, v));
                }
            } else {
                self.type_error(ml, "an object");
            }
        }
        let match_expressions = self
            .list_of(f.get("matchExpressions"), |d, n| {
                let r = d.object(
                    n,
                    "a label selector requirement",
                    &["key", "operator", "values"],
                )?;
                let key = match r.get("key") {
                    Some(k) => d.string(k)?.map(|k| LabelKey::parse(&k)),
                    None => {
                        d.push(Diagnostic::error(
                            Code::MissingField,
                            n.span,
                            "requirement has no `key`",
                        ));
                        return None;
                    }
                };
                let operator = match r.get("operator") {
                    Some(o) => d.name_of(
                        o,
                        "operator",
                        Operator::NAMES,
                        Operator::parse,
                        Code::InvalidValue,
                    )?,
                    None => {
                        d.push(Diagnostic::error(
                            Code::MissingField,
                            n.span,
                            "requirement has no `operator`",
                        ));
                        return None;
                    }
                };
                Some(Requirement {
                    loc: Loc(n.span),
                    key,
                    operator,
                    values: d.string_list(r.get("values")).unwrap_or_default(),
                })
            })
            .unwrap_or_default();
        Some(Selector {
            loc: Loc(node.span),
            match_labels,
            match_expressions,
        })
    }

    fn cidr(&mut self, node: &Node) -> Option<Spanned<Cidr>> {
        let s = self.string(node)?;
        match Cidr::parse(&s.value) {
            // The schemas (the CRDs' `format: cidr`, NetworkPolicy's
            // ipBlock) parse with a prefix length required: a bare address
            // is refused by the API server.
            Ok(c) if c.bare => {
                self.push(
                    Diagnostic::error(
                        Code::InvalidCidr,
                        node.span,
                        format!(
                            "`{}` is an address, not a CIDR: the API server refuses it",
                            s.value
                        ),
                    )
                    .with_label("no prefix length")
                    .with_help(format!(
                        "write `{}/{}` for the one address",
                        s.value,
                        c.max_len()
                    )),
                );
                None
            }
            Ok(c) => Some(Spanned::new(c, node.span)),
            Err(why) => {
                self.push(
                    Diagnostic::error(
                        Code::InvalidCidr,
                        node.span,
                        format!("invalid CIDR `{}`: {why}", s.value),
                    )
                    .with_label("not a CIDR")
                    .with_help("write an address with a prefix length, e.g. `10.0.0.0/8` or `2001:db8::/32`"),
                );
                None
            }
        }
    }

    fn cidr_rule(&mut self, node: &Node) -> Option<CidrRule> {
        let f = self.object(
            node,
            "a CIDR rule",
            &["cidr", "except", "cidrGroupRef", "cidrGroupSelector"],
        )?;
        Some(CidrRule {
            loc: Loc(node.span),
            cidr: f.get("cidr").and_then(|n| self.cidr(n)),
            except: self
                .list_of(f.get("except"), |d, n| d.cidr(n))
                .unwrap_or_default(),
            cidr_group_ref: self.opt_string(f.get("cidrGroupRef")),
            cidr_group_selector: f.get("cidrGroupSelector").and_then(|n| self.selector(n)),
        })
    }

    fn group(&mut self, node: &Node) -> Option<Group> {
        let f = self.object(node, "a group", &["aws"])?;
        let Some(aws) = f.get("aws") else {
            self.push(
                Diagnostic::error(Code::MissingField, node.span, "group has no provider")
                    .with_help("only `aws` groups are supported"),
            );
            return None;
        };
        let a = self.object(
            aws,
            "an AWS group",
            &[
                "labels",
                "securityGroupsIds",
                "securityGroupsNames",
                "region",
            ],
        )?;
        Some(Group {
            loc: Loc(node.span),
            aws: AwsGroup {
                labels: self.string_map(a.get("labels"), "aws.labels"),
                security_groups_ids: plain(self.string_list(a.get("securityGroupsIds"))),
                security_groups_names: plain(self.string_list(a.get("securityGroupsNames"))),
                region: self.opt_string(a.get("region")).map(|s| s.value),
            },
        })
    }

    fn service(&mut self, node: &Node) -> Option<Service> {
        let f = self.object(node, "a service", &["k8sService", "k8sServiceSelector"])?;
        let k8s_service = f.get("k8sService").and_then(|n| {
            let s = self.object(n, "k8sService", &["serviceName", "namespace"])?;
            Some(ServiceName {
                service_name: self.opt_string(s.get("serviceName")),
                namespace: self.opt_string(s.get("namespace")),
            })
        });
        let k8s_service_selector = f.get("k8sServiceSelector").and_then(|n| {
            let s = self.object(n, "k8sServiceSelector", &["selector", "namespace"])?;
            let selector = match s.get("selector") {
                Some(sel) => self.selector(sel)?,
                None => {
                    self.push(Diagnostic::error(
                        Code::MissingField,
                        n.span,
                        "k8sServiceSelector has no `selector`",
                    ));
                    return None;
                }
            };
            Some(ServiceSelector {
                selector,
                namespace: self.opt_string(s.get("namespace")),
            })
        });
        Some(Service {
            loc: Loc(node.span),
            k8s_service,
            k8s_service_selector,
        })
    }

    fn port_rule(&mut self, node: &Node, action: Action) -> Option<PortRule> {
        let fields: &[&'static str] = match action {
            Action::Allow => &[
                "ports",
                "rules",
                "terminatingTLS",
                "originatingTLS",
                "serverNames",
                "listener",
            ],
            Action::Deny => &["ports"],
        };
        let f = self.object(node, "a toPorts rule", fields)?;
        let ports = self.list_of(f.get("ports"), |d, n| {
            let p = d.object(n, "a port", &["port", "endPort", "protocol"])?;
            let protocol = p.get("protocol").and_then(|n| {
                d.name_of(
                    n,
                    "protocol",
                    Protocol::NAMES,
                    Protocol::parse,
                    Code::InvalidValue,
                )
            });
            let portless = protocol.as_ref().is_some_and(|p| p.value.is_portless());
            if p.get("port").is_none() && !portless {
                d.push(
                    Diagnostic::error(Code::InvalidPort, n.span, "a port entry needs `port`")
                        .with_label("no `port` here")
                        .with_help("write `port: \"0\"` to match every port"),
                );
            }
            Some(PortProtocol {
                loc: Loc(n.span),
                port: p.get("port").and_then(|n| d.cilium_port(n, action)),
                end_port: p.get("endPort").and_then(|n| d.int(n)),
                protocol,
            })
        });
        let rules = f.get("rules").and_then(|n| self.l7_rules(n)).map(Box::new);
        let terminating_tls = f
            .get("terminatingTLS")
            .and_then(|n| self.tls(n))
            .map(Box::new);
        let originating_tls = f
            .get("originatingTLS")
            .and_then(|n| self.tls(n))
            .map(Box::new);
        let server_names = self.string_list(f.get("serverNames"));
        let listener = f
            .get("listener")
            .and_then(|n| self.listener(n))
            .map(Box::new);
        Some(PortRule {
            loc: Loc(node.span),
            ports,
            rules,
            terminating_tls,
            originating_tls,
            server_names,
            listener,
        })
    }

    /// A Cilium port: a string holding a number or an IANA port name, read
    /// as Cilium reads it. Allow rules go through `Sanitize`; deny rules do
    /// not, and Cilium enforces whatever `createL4Filter` makes of the text.
    fn cilium_port(&mut self, node: &Node, action: Action) -> Option<Spanned<Port>> {
        let s = self.string(node)?;
        let text = s.value.as_str();
        if !crd_port_pattern(text) {
            // An empty string too: written out, it is checked against the
            // pattern, which needs a digit or a letter (leave `port` out
            // instead).
            self.push(port_error(
                node.span,
                text,
                "the API server's schema rejects it".to_owned(),
            ));
            return None;
        }
        let reading = match action {
            Action::Allow => parse_port_text(text),
            Action::Deny => Ok(deny_port_reading(text)),
        };
        let port = match reading {
            Ok(p) => p,
            Err(why) => {
                self.push(port_error(node.span, text, why));
                return None;
            }
        };
        if let Some(why) = surprising_reading(text, &port, action) {
            self.push(
                Diagnostic::warning(Code::PortReading, node.span, why)
                    .with_label(match &port {
                        Port::Named(_) => "matches no container port".to_owned(),
                        Port::Number(n) => format!("Cilium enforces port {n}"),
                    })
                    .with_help(match port {
                        Port::Named(_) => {
                            "write port names in lower case, as containers declare them".to_owned()
                        }
                        Port::Number(_) => {
                            "write the port as a plain decimal number (ranges with `endPort`)"
                                .to_owned()
                        }
                    }),
            );
        }
        Some(Spanned::new(port, node.span))
    }

    fn l7_rules(&mut self, node: &Node) -> Option<L7Rules> {
        let f = self.object(node, "L7 rules", &["http", "kafka", "dns", "l7proto", "l7"])?;
        let http = self.list_of(f.get("http"), |d, n| {
            let h = d.object(
                n,
                "an HTTP rule",
                &["method", "path", "host", "headers", "headerMatches"],
            )?;
            Some(HttpRule {
                loc: Loc(n.span),
                method: d.opt_string(h.get("method")),
                path: d.opt_string(h.get("path")),
                host: d.opt_string(h.get("host")),
                headers: d.string_list(h.get("headers")).unwrap_or_default(),
                header_matches: d
                    .list_of(h.get("headerMatches"), |d, n| d.header_match(n))
                    .unwrap_or_default(),
            })
        });
        let kafka = self.list_of(f.get("kafka"), |d, n| {
            let k = d.object(
                n,
                "a Kafka rule",
                &["role", "apiKey", "apiVersion", "clientID", "topic"],
            )?;
            Some(KafkaRule {
                loc: Loc(n.span),
                role: k.get("role").and_then(|n| {
                    d.name_of(
                        n,
                        "Kafka role",
                        KafkaRole::NAMES,
                        KafkaRole::parse,
                        Code::KafkaRule,
                    )
                }),
                api_key: d.opt_string(k.get("apiKey")),
                api_version: d.opt_string(k.get("apiVersion")),
                client_id: d.opt_string(k.get("clientID")),
                topic: d.opt_string(k.get("topic")),
            })
        });
        let dns = self.list_of(f.get("dns"), |d, n| d.fqdn_selector(n, "a DNS rule"));
        let l7proto = self.opt_string(f.get("l7proto"));
        let l7 = self.list_of(f.get("l7"), |d, n| {
            Some(d.string_map(Some(n), "an l7 rule"))
        });
        Some(L7Rules {
            loc: Loc(node.span),
            http,
            kafka,
            dns,
            l7proto,
            l7,
        })
    }

    /// `{matchName, matchPattern}`: a toFQDNs selector or a DNS rule (the
    /// same type in Cilium; which fields must be set is checked later).
    fn fqdn_selector(&mut self, node: &Node, what: &str) -> Option<FqdnSelector> {
        let s = self.object(node, what, &["matchName", "matchPattern"])?;
        Some(FqdnSelector {
            loc: Loc(node.span),
            match_name: self.opt_string(s.get("matchName")),
            match_pattern: self.opt_string(s.get("matchPattern")),
        })
    }

    fn header_match(&mut self, node: &Node) -> Option<HeaderMatch> {
        let f = self.object(
            node,
            "a header match",
            &["name", "value", "secret", "mismatch"],
        )?;
        let name = match f.get("name") {
            Some(n) => self.string(n)?,
            None => {
                self.push(
                    Diagnostic::error(Code::HeaderMatch, node.span, "header match has no `name`")
                        .with_label("no name")
                        .with_help("add `name: <header name>`"),
                );
                return None;
            }
        };
        Some(HeaderMatch {
            loc: Loc(node.span),
            name,
            value: self.opt_string(f.get("value")),
            secret: f.get("secret").and_then(|n| self.secret(n)),
            mismatch: f.get("mismatch").and_then(|n| {
                self.name_of(
                    n,
                    "mismatch action",
                    MismatchAction::NAMES,
                    MismatchAction::parse,
                    Code::InvalidValue,
                )
            }),
        })
    }

    fn secret(&mut self, node: &Node) -> Option<SecretRef> {
        let f = self.object(node, "a secret reference", &["name", "namespace"])?;
        let name = match f.get("name") {
            Some(n) => self.string(n)?,
            None => {
                self.push(Diagnostic::error(
                    Code::MissingField,
                    node.span,
                    "secret reference has no `name`",
                ));
                return None;
            }
        };
        Some(SecretRef {
            loc: Loc(node.span),
            name,
            namespace: self.opt_string(f.get("namespace")),
        })
    }

    fn tls(&mut self, node: &Node) -> Option<TlsContext> {
        let f = self.object(
            node,
            "a TLS context",
            &["secret", "trustedCA", "certificate", "privateKey"],
        )?;
        if f.get("secret").is_none() {
            self.push(Diagnostic::error(
                Code::MissingField,
                node.span,
                "a TLS context needs `secret`",
            ));
        }
        Some(TlsContext {
            loc: Loc(node.span),
            secret: f.get("secret").and_then(|n| self.secret(n)),
            trusted_ca: self.opt_string(f.get("trustedCA")).map(|s| s.value),
            certificate: self.opt_string(f.get("certificate")).map(|s| s.value),
            private_key: self.opt_string(f.get("privateKey")).map(|s| s.value),
        })
    }

    fn listener(&mut self, node: &Node) -> Option<Listener> {
        let f = self.object(node, "a listener", &["envoyConfig", "name", "priority"])?;
        let (Some(ec), Some(name)) = (f.get("envoyConfig"), f.get("name")) else {
            self.push(
                Diagnostic::error(
                    Code::MissingField,
                    node.span,
                    "listener needs `envoyConfig` and `name`",
                )
                .with_label("incomplete listener"),
            );
            return None;
        };
        let e = self.object(ec, "envoyConfig", &["kind", "name"])?;
        let Some(ec_name) = e.get("name") else {
            self.push(Diagnostic::error(
                Code::MissingField,
                ec.span,
                "envoyConfig has no `name`",
            ));
            return None;
        };
        let kind = self.opt_string(e.get("kind"));
        if let Some(k) = &kind {
            if !matches!(
                k.value.as_str(),
                "CiliumEnvoyConfig" | "CiliumClusterwideEnvoyConfig"
            ) {
                self.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        k.span(),
                        format!("envoyConfig kind `{}` is not `CiliumEnvoyConfig` or `CiliumClusterwideEnvoyConfig`", k.value),
                    ),
                );
            }
        }
        let ec_name = self.string(ec_name)?;
        let name = self.string(name)?;
        for n in [&ec_name, &name] {
            if n.value.is_empty() {
                self.push(Diagnostic::error(
                    Code::InvalidValue,
                    n.span(),
                    "a listener's names may not be empty",
                ));
            }
        }
        Some(Listener {
            loc: Loc(node.span),
            envoy_config: EnvoyConfigRef {
                kind,
                name: ec_name,
            },
            name,
            priority: f.get("priority").and_then(|n| self.int(n)),
        })
    }

    fn icmp_rule(&mut self, node: &Node) -> Option<IcmpRule> {
        let f = self.object(node, "an ICMP rule", &["fields"])?;
        let fields = self
            .list_of(f.get("fields"), |d, n| {
                let x = d.object(n, "an ICMP field", &["family", "type"])?;
                let family = x.get("family").and_then(|n| {
                    d.name_of(
                        n,
                        "ICMP family",
                        IcmpFamily::NAMES,
                        IcmpFamily::parse,
                        Code::InvalidValue,
                    )
                });
                let Some(t) = x.get("type") else {
                    d.push(Diagnostic::error(
                        Code::MissingField,
                        n.span,
                        "ICMP field has no `type`",
                    ));
                    return None;
                };
                let icmp_type = match t.as_scalar().map(|s| s.resolve()) {
                    Some(Value::Int(i)) => Spanned::new(IcmpType::Number(i), t.span),
                    Some(Value::Str(s)) => Spanned::new(IcmpType::Name(s.to_owned()), t.span),
                    _ => {
                        d.type_error(t, "an integer or an ICMP type name");
                        return None;
                    }
                };
                Some(IcmpField {
                    loc: Loc(n.span),
                    family,
                    icmp_type,
                })
            })
            .unwrap_or_default();
        Some(IcmpRule {
            loc: Loc(node.span),
            fields,
        })
    }

    // -----------------------------------------------------------------------
    // Kubernetes NetworkPolicy

    fn knp_spec(&mut self, node: &Node) -> Option<KnpSpec> {
        let f = self.object(
            node,
            "a NetworkPolicy spec",
            &["podSelector", "ingress", "egress", "policyTypes"],
        )?;
        let pod_selector = match f.get("podSelector") {
            Some(n) => self.selector(n)?,
            None => {
                self.push(
                    Diagnostic::error(
                        Code::MissingField,
                        node.span,
                        "NetworkPolicy spec has no `podSelector`",
                    )
                    .with_help("use `podSelector: {}` to select every pod of the namespace"),
                );
                return None;
            }
        };
        let ingress = self.list_of(f.get("ingress"), |d, n| d.knp_rule(n, "from"));
        let egress = self.list_of(f.get("egress"), |d, n| d.knp_rule(n, "to"));
        let policy_types = self.list_of(f.get("policyTypes"), |d, n| {
            d.name_of(
                n,
                "policy type",
                PolicyType::NAMES,
                PolicyType::parse,
                Code::InvalidValue,
            )
        });
        Some(KnpSpec {
            loc: Loc(node.span),
            pod_selector,
            ingress,
            egress,
            policy_types,
        })
    }

    fn knp_rule(&mut self, node: &Node, peers: &'static str) -> Option<KnpRule> {
        let what = if peers == "from" {
            "a NetworkPolicy ingress rule"
        } else {
            "a NetworkPolicy egress rule"
        };
        let f = self.object(node, what, &[peers, "ports"])?;
        Some(KnpRule {
            loc: Loc(node.span),
            peers: self.list_of(f.get(peers), |d, n| {
                let p = d.object(
                    n,
                    "a NetworkPolicy peer",
                    &["podSelector", "namespaceSelector", "ipBlock"],
                )?;
                Some(KnpPeer {
                    loc: Loc(n.span),
                    pod_selector: p.get("podSelector").and_then(|s| d.selector(s)),
                    namespace_selector: p.get("namespaceSelector").and_then(|s| d.selector(s)),
                    ip_block: p.get("ipBlock").and_then(|b| {
                        let b_f = d.object(b, "an ipBlock", &["cidr", "except"])?;
                        let Some(c) = b_f.get("cidr") else {
                            d.push(Diagnostic::error(
                                Code::MissingField,
                                b.span,
                                "ipBlock has no `cidr`",
                            ));
                            return None;
                        };
                        Some(IpBlock {
                            loc: Loc(b.span),
                            cidr: d.cidr(c)?,
                            except: d
                                .list_of(b_f.get("except"), |d, n| d.cidr(n))
                                .unwrap_or_default(),
                        })
                    }),
                })
            }),
            ports: self.list_of(f.get("ports"), |d, n| {
                let p = d.object(n, "a NetworkPolicy port", &["protocol", "port", "endPort"])?;
                Some(KnpPort {
                    loc: Loc(n.span),
                    protocol: p.get("protocol").and_then(|n| {
                        d.name_of(
                            n,
                            "protocol",
                            &["TCP", "UDP", "SCTP"],
                            |s| {
                                Protocol::parse(s)
                                    .filter(|p| p.number().is_some() && !p.is_portless())
                            },
                            Code::InvalidValue,
                        )
                    }),
                    port: p.get("port").and_then(|n| d.knp_port(n)),
                    end_port: p.get("endPort").and_then(|n| d.int(n)),
                })
            }),
        })
    }

    /// A NetworkPolicy port: an integer 1-65535 or an IANA port name.
    fn knp_port(&mut self, node: &Node) -> Option<Spanned<Port>> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Value::Int(i)) => match u16::try_from(i) {
                Ok(p) if p > 0 => Some(Spanned::new(Port::Number(p), node.span)),
                _ => {
                    self.push(
                        Diagnostic::error(
                            Code::KnpPort,
                            node.span,
                            format!("port {i} is out of range 1-65535"),
                        )
                        .with_label("invalid port")
                        .with_help("omit `port` to match every port of the protocol"),
                    );
                    None
                }
            },
            Some(Value::Str(s)) => match parse_port_name(s) {
                Ok(name) => Some(Spanned::new(Port::Named(name), node.span)),
                Err(why) => {
                    self.push(port_error(node.span, s, why).with_help(
                        "in a NetworkPolicy a number is written unquoted; a string must be a port name",
                    ));
                    None
                }
            },
            _ => {
                self.type_error(node, "an integer or a port name");
                None
            }
        }
    }
}

fn plain(v: Option<Vec<Spanned<String>>>) -> Vec<String> {
    v.unwrap_or_default().into_iter().map(|s| s.value).collect()
}

fn port_error(span: Span, text: &str, why: String) -> Diagnostic {
    Diagnostic::error(Code::InvalidPort, span, format!("invalid port `{text}`: {why}"))
        .with_label("not a port")
        .with_help("use a number from 0 to 65535 or a port name (at most 15 lowercase letters, digits and hyphens, with at least one letter)")
}

/// The CRD's pattern for a port string, as the API server applies it. Its
/// two alternatives are anchored on one side each
/// (`^(numbers)|(name)$`), so any text starting with a digit passes, and
/// any text ending in a name-like tail.
pub fn crd_port_pattern(text: &str) -> bool {
    let b = text.as_bytes();
    if b.first().is_some_and(u8::is_ascii_digit) {
        return true;
    }
    // tail[i]: b[i..] is a run of (`-`? alphanumeric).
    let n = b.len();
    let mut tail = vec![false; n + 2];
    tail[n] = true;
    for i in (0..n).rev() {
        tail[i] = (b[i].is_ascii_alphanumeric() && tail[i + 1])
            || (b[i] == b'-' && i + 1 < n && b[i + 1].is_ascii_alphanumeric() && tail[i + 2]);
    }
    (0..n).any(|i| b[i].is_ascii_alphabetic() && tail[i + 1])
}

/// Why Go's `strconv.ParseUint(s, 0, 16)` refuses a text.
#[derive(Debug, PartialEq, Eq)]
pub enum GoUintError {
    Syntax,
    /// Too large: Go returns the largest value with this error.
    Range,
}

/// `strconv.ParseUint(s, 0, 16)`: base prefixes (`0x`, `0o`, `0b`, and a
/// bare leading `0` for octal) and `_` between digits.
pub fn go_parse_u16(text: &str) -> Result<u16, GoUintError> {
    let b = text.as_bytes();
    if b.is_empty() {
        return Err(GoUintError::Syntax);
    }
    let lower = |c: u8| c | 0x20;
    let (base, digits): (u32, &[u8]) = if b[0] == b'0' && b.len() >= 3 && lower(b[1]) == b'x' {
        (16, &b[2..])
    } else if b[0] == b'0' && b.len() >= 3 && lower(b[1]) == b'o' {
        (8, &b[2..])
    } else if b[0] == b'0' && b.len() >= 3 && lower(b[1]) == b'b' {
        (2, &b[2..])
    } else if b[0] == b'0' {
        (8, &b[1..])
    } else {
        (10, b)
    };
    let mut n: u32 = 0;
    let mut underscores = false;
    for &c in digits {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => u32::from(c - b'0'),
            b'a'..=b'z' | b'A'..=b'Z' => u32::from(lower(c) - b'a') + 10,
            _ => return Err(GoUintError::Syntax),
        };
        if d >= base {
            return Err(GoUintError::Syntax);
        }
        n = n * base + d;
        if n > u32::from(u16::MAX) {
            return Err(GoUintError::Range);
        }
    }
    if underscores && !go_underscores_ok(b) {
        return Err(GoUintError::Syntax);
    }
    Ok(n as u16)
}

/// Go's rule for `_` in number literals: only between digits (or after
/// a base prefix).
fn go_underscores_ok(b: &[u8]) -> bool {
    let mut saw = b'^';
    let mut i = 0;
    let hex = b.len() >= 2 && b[0] == b'0' && (b[1] | 0x20) == b'x';
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1] | 0x20, b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Cilium's IANA service-name test (`iana.IsSvcName`): 1-15 letters,
/// digits and single inner hyphens, at least one letter; case kept.
pub fn is_svc_name(text: &str) -> bool {
    !text.is_empty() && text.len() <= 15 && parse_port_name(text).is_ok()
}

/// A port of an allow rule, as `PortProtocol.Sanitize` reads it: a service
/// name (lower-cased), else a number in Go's base-prefix syntax.
pub fn parse_port_text(text: &str) -> Result<Port, String> {
    if text.is_empty() {
        return Err("the port is empty".to_owned());
    }
    if is_svc_name(text) {
        return parse_port_name(text).map(Port::Named);
    }
    match go_parse_u16(text) {
        Ok(n) => Ok(Port::Number(n)),
        Err(GoUintError::Range) => Err("it is out of range 0-65535".to_owned()),
        Err(GoUintError::Syntax) if text.bytes().all(|b| b.is_ascii_digit() || b == b'_') => {
            Err("Cilium reads a leading 0 as octal, and this is not an octal number".to_owned())
        }
        Err(GoUintError::Syntax) => parse_port_name(text).map(Port::Named),
    }
}

/// A port of a deny rule, as Cilium enforces it without `Sanitize`
/// (`createL4Filter`): a service name as written (not lower-cased, so an
/// upper-case name matches no container port), else the number Go parses,
/// which is 0 (every port) when the text does not parse and 65535 when it
/// is too large.
pub fn deny_port_reading(text: &str) -> Port {
    if is_svc_name(text) {
        return Port::Named(text.to_owned());
    }
    match go_parse_u16(text) {
        Ok(n) => Port::Number(n),
        Err(GoUintError::Range) => Port::Number(u16::MAX),
        Err(GoUintError::Syntax) => Port::Number(0),
    }
}

/// What to tell the user when Cilium's reading of a port string is not
/// what it looks like.
fn surprising_reading(text: &str, port: &Port, action: Action) -> Option<String> {
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text.len() == 1 || !text.starts_with('0'))
        && text.parse::<u32>().is_ok_and(|n| n <= 65535);
    match port {
        Port::Number(n) if !plain => Some(match (action, n) {
            (Action::Deny, 0) => format!(
                "Cilium does not check ports in deny rules and reads `{text}` as port 0: this rule denies every port of its protocol"
            ),
            (Action::Deny, 65535) if go_parse_u16(text) == Err(GoUintError::Range) => format!(
                "Cilium does not check ports in deny rules and reads the out-of-range `{text}` as port 65535"
            ),
            _ => format!("Cilium reads `{text}` as port {n} (Go number syntax: a leading 0 is octal)"),
        }),
        Port::Named(name) if action == Action::Deny && name.bytes().any(|b| b.is_ascii_uppercase()) => Some(format!(
            "Cilium does not lower-case port names in deny rules: `{text}` matches no container port (their names are lower case), so this rule denies nothing"
        )),
        _ => None,
    }
}

/// Checks an IANA service name (RFC 6335 §5.1, as Kubernetes' IsValidPortName)
/// and returns it lower-cased.
pub fn parse_port_name(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    if lower.len() > 15 {
        return Err(format!(
            "a port name is at most 15 characters, this has {}",
            lower.len()
        ));
    }
    if !lower
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("a port name has only letters, digits and hyphens".to_owned());
    }
    if !lower.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("a port name needs at least one letter".to_owned());
    }
    if lower.starts_with('-') || lower.ends_with('-') || lower.contains("--") {
        return Err(
            "a port name cannot begin or end with a hyphen or have two in a row".to_owned(),
        );
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_text() {
        assert_eq!(parse_port_text("80"), Ok(Port::Number(80)));
        assert_eq!(parse_port_text("0"), Ok(Port::Number(0)));
        assert_eq!(parse_port_text("http"), Ok(Port::Named("http".into())));
        assert_eq!(parse_port_text("0x10"), Ok(Port::Named("0x10".into())));
        // Go's base prefixes, as Cilium parses ports.
        assert_eq!(parse_port_text("010"), Ok(Port::Number(8)));
        assert!(parse_port_text("080").is_err());
        assert_eq!(parse_port_text("8_0"), Ok(Port::Number(80)));
        assert!(parse_port_text("8__0").is_err());
        assert_eq!(parse_port_text("HTTP"), Ok(Port::Named("http".into())));
        assert!(parse_port_text("65536").is_err());
        assert!(parse_port_text("99999999999999999999").is_err());
        assert!(parse_port_text("REMOVE_ME_AFTER_DOUBLE_CHECKING_PORTS").is_err());
        assert!(parse_port_text("-http").is_err());
        assert!(parse_port_text("a--b").is_err());
        assert!(parse_port_text("").is_err());
    }

    #[test]
    fn deny_ports_are_not_sanitized() {
        assert_eq!(deny_port_reading("HTTP"), Port::Named("HTTP".into()));
        assert_eq!(deny_port_reading("80-90"), Port::Number(0));
        assert_eq!(deny_port_reading("080"), Port::Number(0));
        assert_eq!(deny_port_reading("70000"), Port::Number(65535));
        assert_eq!(deny_port_reading("010"), Port::Number(8));
        assert_eq!(deny_port_reading("443"), Port::Number(443));
    }

    #[test]
    fn crd_pattern_is_anchored_on_one_side_each() {
        for ok in [
            "80", "80-90", "010", "70000", "http", "HTTP", "abc_def", "x-1",
        ] {
            assert!(crd_port_pattern(ok), "{ok}");
        }
        for bad in ["", " 80", "-", "_", "a-", "-80", "é"] {
            assert!(!crd_port_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn go_parse_matches_strconv() {
        assert_eq!(go_parse_u16("0"), Ok(0));
        assert_eq!(go_parse_u16("00"), Ok(0));
        assert_eq!(go_parse_u16("0x50"), Ok(80));
        assert_eq!(go_parse_u16("0o17"), Ok(15));
        assert_eq!(go_parse_u16("0b101"), Ok(5));
        assert_eq!(go_parse_u16("65535"), Ok(65535));
        assert_eq!(go_parse_u16("65536"), Err(GoUintError::Range));
        assert_eq!(go_parse_u16("0x"), Err(GoUintError::Syntax));
        assert_eq!(go_parse_u16("_80"), Err(GoUintError::Syntax));
        assert_eq!(go_parse_u16("80_"), Err(GoUintError::Syntax));
        assert_eq!(go_parse_u16("0_10"), Ok(8));
        assert_eq!(go_parse_u16("+80"), Err(GoUintError::Syntax));
        assert_eq!(
            go_parse_u16("99999999999999999999"),
            Err(GoUintError::Range)
        );
    }
}
