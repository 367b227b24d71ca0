//! Semantic validation: what Cilium's agent and the Kubernetes API reject
//! beyond the schema.
//!
//! The checks follow Cilium's `Rule.Sanitize` / `Validate` and Kubernetes'
//! NetworkPolicy validation. Each failed check is one [`Diagnostic`] with a
//! stable [`Code`], pointing at the offending value.

use crate::diag::{Code, Diagnostic};
use crate::ir::*;
use crate::source::{Loc, SourceMap, Span, Spanned};
use std::collections::HashMap;

/// Cilium's limit on `ports` per port rule and `fields` per ICMP rule.
pub const MAX_PORTS: usize = 40;

/// Below this many policies validation runs on one thread.
const PARALLEL_THRESHOLD: usize = 1000;

/// Checks every policy of the set; appends what it finds to `diags`.
///
/// Policies are checked independently (in parallel for large sets, merged
/// in set order); duplicate names are found afterwards over the whole set.
/// Cilium agent settings that change what it accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidateOptions {
    /// `--enable-node-selector-labels`: `fromNodes` / `toNodes` allowed.
    pub node_selector_labels: bool,
    /// The release whose validation is followed where releases differ.
    pub cilium: crate::version::CiliumVersion,
}

pub fn validate(
    set: &PolicySet,
    sources: &SourceMap,
    opts: ValidateOptions,
    diags: &mut Vec<Diagnostic>,
) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let check = |policies: &[Policy]| {
        let mut out = Vec::new();
        let mut v = Validator {
            sources,
            opts,
            diags: &mut out,
        };
        for p in policies {
            v.policy(p);
        }
        out
    };
    if set.policies.len() < PARALLEL_THRESHOLD || threads < 2 {
        diags.extend(check(&set.policies));
    } else {
        let chunk = set.policies.len().div_ceil(threads);
        let parts: Vec<Vec<Diagnostic>> = std::thread::scope(|scope| {
            let handles: Vec<_> = set
                .policies
                .chunks(chunk)
                .map(|c| scope.spawn(move || check(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        diags.extend(parts.into_iter().flatten());
    }
    let v = Validator {
        sources,
        opts,
        diags,
    };
    let mut seen: HashMap<(PolicyKind, Option<&str>, &str), &Policy> =
        HashMap::with_capacity(set.policies.len());
    for p in &set.policies {
        let key = (p.kind, p.namespace(), p.name.value.as_str());
        if let Some(first) = seen.get(&key) {
            v.diags.push(
                Diagnostic::error(
                    Code::DuplicatePolicy,
                    p.name.span(),
                    format!("{} `{}` is defined twice", p.kind, p.qualified_name()),
                )
                .with_label("second definition")
                .with_related(first.name.span(), "first defined here")
                .with_help("the API server keeps only one object per name: rename one, or merge their rules"),
            );
        } else {
            seen.insert(key, p);
        }
    }
}

struct Validator<'a> {
    sources: &'a SourceMap,
    opts: ValidateOptions,
    diags: &'a mut Vec<Diagnostic>,
}

/// Where a rule sits, for checks that depend on it.
#[derive(Clone, Copy)]
struct Ctx {
    dir: Direction,
    host: bool,
    /// Cilium's agent sanitizes only the allow lists.
    deny: bool,
}

impl Validator<'_> {
    fn err(&mut self, code: Code, span: Span, msg: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(code, span, msg));
        self.diags.last_mut().expect("just pushed")
    }

    /// The first line of a span: enough to point at a block without
    /// underlining all of it.
    fn head(&self, span: Span) -> Span {
        let text = self.sources.snippet(span);
        match text.find('\n') {
            Some(n) => Span {
                end: span.start + text[..n].trim_end().len() as u32,
                ..span
            },
            None => span,
        }
    }

    fn policy(&mut self, p: &Policy) {
        if let Some(why) = check_dns_subdomain(&p.name.value).err() {
            self.err(
                Code::InvalidName,
                p.name.span(),
                format!("invalid name `{}`: {why}", p.name.value),
            )
            .label = Some("not a valid object name".into());
        }
        if let Some(ns) = &p.namespace {
            if let Err(why) = check_dns_label(&ns.value) {
                self.err(
                    Code::InvalidName,
                    ns.span(),
                    format!("invalid namespace `{}`: {why}", ns.value),
                );
            }
        }
        if let Some(mode) = p.annotations.get("policy.sluice.dev/mode") {
            if mode != "audit" && mode != "enforce" {
                let d = self.err(
                    Code::InvalidValue,
                    self.head(p.loc.0),
                    format!("annotation `policy.sluice.dev/mode` is `{mode}`; it must be `audit` or `enforce`"),
                );
                d.help =
                    Some("`audit` reports what the policy would drop and drops nothing".into());
            }
        }
        match &p.body {
            PolicyBody::Cilium(_) => {
                for r in p.rules() {
                    self.rule(r, p.kind);
                    if let Some(ns) = p.namespace() {
                        self.own_namespace(r, ns);
                    }
                }
            }
            PolicyBody::Kubernetes(spec) => self.knp(spec),
        }
    }

    fn rule(&mut self, r: &Rule, kind: PolicyKind) {
        match (&r.endpoint_selector, &r.node_selector) {
            (Some(_), Some(n)) => {
                self.err(
                    Code::SubjectSelector,
                    self.head(n.loc.0),
                    "a rule has both `endpointSelector` and `nodeSelector`",
                )
                .help = Some("use `endpointSelector` for pods, `nodeSelector` for nodes (host policy); split into two rules for both".into());
            }
            (None, None) => {
                self.err(
                    Code::SubjectSelector,
                    self.head(r.loc.0),
                    "a rule has neither `endpointSelector` nor `nodeSelector`",
                )
                .help = Some("add `endpointSelector: {}` to select every endpoint in scope".into());
            }
            _ => {}
        }
        if let (Some(n), PolicyKind::CiliumNetworkPolicy) = (&r.node_selector, kind) {
            let d = self.err(
                Code::NodeSelectorInCnp,
                self.head(n.loc.0),
                "`nodeSelector` is only allowed in a CiliumClusterwideNetworkPolicy",
            );
            d.label = Some("host policies are cluster-wide".into());
            d.help = Some("move this rule into a CiliumClusterwideNetworkPolicy".into());
        }
        for s in r.endpoint_selector.iter().chain(&r.node_selector) {
            self.selector(s, false);
        }
        if r.peer_lists()
            .iter()
            .all(|(_, _, l)| l.is_none_or(|l| l.is_empty()))
        {
            let v = self.opts.cilium;
            let msg = "rule has none of `ingress`, `ingressDeny`, `egress`, `egressDeny`";
            let span = self.head(r.loc.0);
            let (d, label) = if v.refuses_rules_without_direction() {
                (
                    Diagnostic::error(Code::NoDirection, span, msg),
                    format!("Cilium {v} refuses a rule that says nothing about traffic"),
                )
            } else {
                (
                    Diagnostic::warning(Code::NoDirection, span, msg),
                    format!("Cilium {v} accepts this rule, and it has no effect (later releases refuse it)"),
                )
            };
            self.diags.push(d);
            let d = self.diags.last_mut().expect("just pushed");
            d.label = Some(label);
            d.help = Some("add a rule list; an empty list (`ingress: []`) does not count, `ingress: [{}]` denies all ingress".into());
        }
        for (dir, action, list) in r.peer_lists() {
            for pr in list.into_iter().flatten() {
                self.peer_rule(
                    pr,
                    Ctx {
                        dir,
                        host: r.is_host_policy(),
                        deny: action == Action::Deny,
                    },
                );
            }
        }
        if let Some(log) = &r.log {
            if log.value.chars().count() > 32
                || !log.value.chars().all(|c| (' '..='~').contains(&c))
            {
                self.err(
                    Code::LogValue,
                    log.span(),
                    format!(
                        "`log.value` must be at most 32 printable ASCII characters, it has {}",
                        log.value.chars().count()
                    ),
                );
            }
        }
    }

    /// Cilium sets the namespace of a namespaced policy's subject, replacing
    /// a `k8s:io.kubernetes.pod.namespace` written in its matchLabels
    /// (`ParseToCiliumRule`, which logs it): say so where it changes what
    /// the rule selects.
    fn own_namespace(&mut self, r: &Rule, ns: &str) {
        let Some(sel) = &r.endpoint_selector else {
            return;
        };
        for (k, v) in &sel.match_labels {
            if k.value.source.as_deref() == Some("k8s")
                && k.value.key == "io.kubernetes.pod.namespace"
                && v.value != ns
            {
                let mut d = Diagnostic::warning(
                    Code::ForeignNamespace,
                    v.span(),
                    format!(
                        "this policy lives in namespace `{ns}`: Cilium replaces `{}` with `{ns}` and the rule selects pods of `{ns}`",
                        v.value
                    ),
                );
                d.label = Some(format!("ignored: the subject is always in `{ns}`"));
                d.help = Some(format!(
                    "create the policy in namespace `{}` instead, or use a CiliumClusterwideNetworkPolicy",
                    v.value
                ));
                self.diags.push(d);
            }
        }
    }

    fn selector(&mut self, s: &Selector, kubernetes: bool) {
        // Cilium keys matchLabels by `source.key`, with `any.` for a key
        // written without a source: `app` and `any:app` are one key, and
        // which value survives depends on Go's map order.
        let mut seen: HashMap<(&str, &str), &Spanned<LabelKey>> = HashMap::new();
        for (k, _) in &s.match_labels {
            let source = k.value.source.as_deref().unwrap_or("any");
            if let Some(first) = seen.insert((source, k.value.key.as_str()), k) {
                let d = self.err(
                    Code::AmbiguousSelector,
                    k.span(),
                    format!(
                        "`{}` and `{}` are the same key to Cilium (`{source}.{}`)",
                        first.value, k.value, k.value.key
                    ),
                );
                d.label = Some("same key as an earlier one".into());
                d.help = Some("Cilium keeps one of the two values at random; write the key once (use matchExpressions with `In` for several values)".into());
                d.related.push(crate::diag::Related {
                    span: first.span(),
                    message: "first written here".into(),
                });
            }
        }
        for (k, v) in &s.match_labels {
            self.label_key(k, kubernetes);
            if let Err(why) = check_label_value(&v.value) {
                self.err(
                    Code::InvalidLabel,
                    v.span(),
                    format!("invalid label value `{}`: {why}", v.value),
                )
                .label = Some("not a valid label value".into());
            }
        }
        for req in &s.match_expressions {
            self.label_key(&req.key, kubernetes);
            let op = req.operator.value;
            let needs_values = matches!(op, Operator::In | Operator::NotIn);
            if needs_values && req.values.is_empty() {
                self.err(
                    Code::SelectorOperator,
                    req.operator.span(),
                    format!("operator `{}` needs at least one value", op.as_str()),
                )
                .help = Some("add `values: [...]`, or use `Exists`".into());
            } else if !needs_values && !req.values.is_empty() {
                let span = req.values[0]
                    .span()
                    .to(req.values[req.values.len() - 1].span());
                let d = self.err(
                    Code::SelectorOperator,
                    span,
                    format!("operator `{}` takes no values", op.as_str()),
                );
                d.label = Some("values given here".into());
                d.help = Some("remove `values`, or use `In` / `NotIn`".into());
            }
        }
    }

    fn label_key(&mut self, k: &Spanned<LabelKey>, kubernetes: bool) {
        let problem = if kubernetes && k.value.source.is_some() {
            Some("a Kubernetes label key has no `source:` prefix".to_owned())
        } else {
            check_label_key(&k.value.key).err()
        };
        if let Some(why) = problem {
            self.err(
                Code::InvalidLabel,
                k.span(),
                format!("invalid label key `{}`: {why}", k.value),
            )
            .label = Some("not a valid label key".into());
        }
    }

    fn peer_rule(&mut self, pr: &PeerRule, cx: Ctx) {
        let kinds = pr.l3_kinds();
        if kinds.len() > 1 {
            let (k0, l0) = kinds[0];
            for &(k, l) in &kinds[1..] {
                let d = self.err(
                    Code::CombinedL3,
                    self.head(l.0),
                    format!(
                        "combining `{}` and `{}` in one rule is not supported",
                        k0.field(cx.dir),
                        k.field(cx.dir)
                    ),
                );
                d.label = Some(format!("`{}` starts here", k.field(cx.dir)));
                d.help =
                    Some("put each kind of peer in its own list element; elements are ORed".into());
                d.related.push(crate::diag::Related {
                    span: l0.0,
                    message: format!("`{}` starts here", k0.field(cx.dir)),
                });
            }
        }
        for s in pr
            .endpoints
            .iter()
            .flatten()
            .chain(pr.requires.iter().flatten())
        {
            self.selector(s, false);
        }
        for s in pr.nodes.iter().flatten() {
            self.selector(s, false);
        }
        if let (Some(nodes), false) = (&pr.nodes, self.opts.node_selector_labels) {
            if !nodes.is_empty() {
                let field = if cx.dir == Direction::Ingress {
                    "fromNodes"
                } else {
                    "toNodes"
                };
                let d = self.err(
                    Code::NodeSelectorLabels,
                    self.head(nodes[0].loc.0),
                    format!("Cilium rejects `{field}` unless node selector labels are enabled"),
                );
                d.help = Some("enable them in Cilium (`--enable-node-selector-labels`) and pass `--node-selector-labels` to sluice, or select nodes with the `remote-node` / `host` entities".into());
            }
        }
        for c in pr.cidr_set.iter().flatten() {
            self.cidr_rule(c);
        }
        for f in pr.fqdns.iter().flatten() {
            self.fqdn(
                f.loc,
                f.match_name.as_ref(),
                f.match_pattern.as_ref(),
                "a toFQDNs selector",
            );
        }
        if let (Some(services), Some(ports), false) = (&pr.services, &pr.to_ports, cx.deny) {
            if !services.is_empty() && !ports.is_empty() {
                let d = self.err(
                    Code::CombinedL3,
                    self.head(ports[0].loc.0),
                    "combining `toServices` and `toPorts` in one rule is not supported",
                );
                d.label = Some("Cilium's agent refuses this rule (cilium/cilium#20067)".into());
                d.help = Some(
                    "allow the Service's backends by their labels with `toEndpoints` and `toPorts` instead"
                        .into(),
                );
            }
        }
        for s in pr.services.iter().flatten() {
            if let Some(sel) = &s.k8s_service_selector {
                self.selector(&sel.selector, false);
            }
        }
        if let (Some(icmps), Some(ports)) = (&pr.icmps, &pr.to_ports) {
            if !icmps.is_empty() && !ports.is_empty() {
                let ports_head = self.head(ports[0].loc.0);
                let d = self.err(
                    Code::IcmpWithPorts,
                    self.head(icmps[0].loc.0),
                    "`icmps` and `toPorts` cannot be used in the same rule",
                );
                d.related.push(crate::diag::Related {
                    span: ports_head,
                    message: "`toPorts` here".into(),
                });
                d.help = Some("split them into two rule elements with the same peers".into());
            }
        }
        for ir in pr.icmps.iter().flatten() {
            self.icmp_rule(ir);
        }
        for p in pr.to_ports.iter().flatten() {
            self.port_rule(p, cx);
        }
    }

    fn cidr_rule(&mut self, c: &CidrRule) {
        let set = [
            c.cidr.is_some(),
            c.cidr_group_ref.is_some(),
            c.cidr_group_selector.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            let msg = if set == 0 {
                "a CIDR rule needs one of `cidr`, `cidrGroupRef` or `cidrGroupSelector`"
            } else {
                "a CIDR rule may set only one of `cidr`, `cidrGroupRef` and `cidrGroupSelector`"
            };
            self.err(Code::CidrRuleSource, self.head(c.loc.0), msg);
        }
        if let Some(r) = &c.cidr_group_ref {
            if let Err(why) = check_dns_subdomain(&r.value) {
                self.err(
                    Code::InvalidName,
                    r.span(),
                    format!(
                        "`cidrGroupRef` `{}` is not a CiliumCIDRGroup name: {why}",
                        r.value
                    ),
                );
            }
        }
        if let Some(cidr) = &c.cidr {
            for e in &c.except {
                self.except(cidr, e, false);
            }
        } else if let Some(e) = c.except.first() {
            self.err(
                Code::CidrExcept,
                e.span(),
                "`except` is only allowed together with `cidr`",
            );
        }
    }

    fn except(&mut self, cidr: &Spanned<Cidr>, e: &Spanned<Cidr>, strict: bool) {
        let problem = if cidr.value.addr.is_ipv4() != e.value.addr.is_ipv4() {
            Some("is of another address family than")
        } else if !cidr.value.contains(&e.value) {
            Some("is not inside")
        } else if strict && e.value.prefix_len == cidr.value.prefix_len {
            Some("must be strictly smaller than")
        } else {
            None
        };
        if let Some(why) = problem {
            let d = self.err(
                Code::CidrExcept,
                e.span(),
                format!("except `{}` {why} `{}`", e.value, cidr.value),
            );
            d.label = Some("this exception".into());
            d.related.push(crate::diag::Related {
                span: cidr.span(),
                message: "the CIDR it belongs to".into(),
            });
        }
    }

    fn fqdn(
        &mut self,
        loc: Loc,
        name: Option<&Spanned<String>>,
        pattern: Option<&Spanned<String>>,
        what: &str,
    ) {
        // The CRD schema has `oneOf: [matchName, matchPattern]` for the
        // selector type that toFQDNs and DNS rules share.
        if name.is_some() == pattern.is_some() {
            let msg = if name.is_some() {
                format!("{what} may set only one of `matchName` and `matchPattern`")
            } else {
                format!("{what} needs `matchName` or `matchPattern`")
            };
            self.err(Code::FqdnSelector, self.head(loc.0), msg).help =
                Some("use one list element per name or pattern".into());
        }
        for (v, wildcard) in [(name, false), (pattern, true)] {
            let Some(v) = v else { continue };
            if let Err(why) = check_dns_name(&v.value, wildcard) {
                self.err(
                    Code::FqdnSelector,
                    v.span(),
                    format!(
                        "invalid DNS {} `{}`: {why}",
                        if wildcard { "pattern" } else { "name" },
                        v.value
                    ),
                );
            }
        }
    }

    fn icmp_rule(&mut self, r: &IcmpRule) {
        if r.fields.len() > MAX_PORTS {
            self.err(
                Code::TooManyPorts,
                self.head(r.loc.0),
                format!(
                    "too many ICMP fields: {} given, the limit is {MAX_PORTS}",
                    r.fields.len()
                ),
            );
        }
        for f in &r.fields {
            let family = f.family.as_ref().map_or(IcmpFamily::V4, |f| f.value);
            if let Err(why) = icmp_type_number(&f.icmp_type.value, family) {
                self.err(Code::InvalidIcmpType, f.icmp_type.span(), why)
                    .label = Some(format!("not an {family} ICMP type"));
            }
        }
    }

    fn port_rule(&mut self, pr: &PortRule, cx: Ctx) {
        let ports = pr.ports.as_deref().unwrap_or(&[]);
        if ports.len() > MAX_PORTS {
            self.err(
                Code::TooManyPorts,
                self.head(pr.loc.0),
                format!(
                    "too many ports: {} given, the limit is {MAX_PORTS}",
                    ports.len()
                ),
            )
            .help = Some(
                "split the ports over several `toPorts` elements, or use `endPort` ranges".into(),
            );
        }
        for p in ports {
            self.port(p);
        }
        let rules = pr.rules.as_ref().filter(|r| r.has_rules());
        if let Some(rules) = rules {
            self.l7(pr, rules, ports, cx);
        }
        if let Some(l) = &pr.listener {
            if cx.dir == Direction::Ingress {
                self.err(
                    Code::Listener,
                    self.head(l.loc.0),
                    "`listener` is not supported on ingress",
                );
            }
            if rules.is_some() {
                self.err(
                    Code::Listener,
                    self.head(l.loc.0),
                    "`listener` cannot be combined with L7 `rules`",
                )
                .help = Some("the listener's Envoy config enforces L7; remove `rules`".into());
            }
            if let Some(p) = &l.priority {
                if !(1..=100).contains(&p.value) {
                    self.err(
                        Code::InvalidValue,
                        p.span(),
                        format!("listener priority {} is out of range 1-100", p.value),
                    );
                }
            }
        }
        if let Some(names) = &pr.server_names {
            for n in names {
                if n.value.is_empty() {
                    self.err(Code::ServerNames, n.span(), "empty server name");
                } else if let Err(why) = check_server_name(&n.value) {
                    self.err(
                        Code::ServerNames,
                        n.span(),
                        format!("invalid server name `{}`: {why}", n.value),
                    );
                }
            }
            if !names.is_empty() && rules.is_some() && pr.terminating_tls.is_none() {
                self.err(
                    Code::ServerNames,
                    self.head(names[0].span()),
                    "`serverNames` with L7 rules requires `terminatingTLS`",
                )
                .help = Some("the proxy must terminate TLS to see the HTTP inside".into());
            }
        }
    }

    fn port(&mut self, p: &PortProtocol) {
        let proto = p.protocol.as_ref().map_or(Protocol::Any, |p| p.value);
        let number = match p.port.as_ref().map(|s| &s.value) {
            Some(Port::Number(n)) => Some(*n),
            Some(Port::Named(_)) => None,
            // Absent (reported by the decoder unless the protocol is
            // portless) or invalid (reported too): 0 keeps later checks quiet.
            None => Some(0),
        };
        if proto.is_portless() && !self.opts.cilium.portless_protocols() {
            if let Some(pr) = &p.protocol {
                let v = self.opts.cilium;
                let d = self.err(
                    Code::InvalidValue,
                    pr.span(),
                    format!("protocol {proto} is not in the CRD of Cilium {v}"),
                );
                d.label = Some("the API server refuses it: TCP, UDP, SCTP and ANY only".into());
                d.help =
                    Some("Cilium 1.18 added VRRP and IGMP (sluice --cilium-version 1.18)".into());
            }
        }
        if proto.is_portless() && number.is_some_and(|n| n != 0) {
            if let Some(port) = &p.port {
                self.err(
                    Code::InvalidPort,
                    port.span(),
                    format!("protocol {proto} has no ports; `port` must be empty or \"0\""),
                );
            }
        }
        if let Some(end) = &p.end_port {
            if !(0..=65535).contains(&end.value) {
                self.err(
                    Code::InvalidEndPort,
                    end.span(),
                    format!("endPort {} is out of range 0-65535", end.value),
                );
            } else if matches!(p.port.as_ref().map(|s| &s.value), Some(Port::Named(_))) {
                self.err(
                    Code::InvalidEndPort,
                    end.span(),
                    "`endPort` cannot be used with a named port",
                );
            } else if let Some(n) = number {
                if end.value != 0 && end.value < i64::from(n) {
                    let d = self.err(
                        Code::InvalidEndPort,
                        end.span(),
                        format!("endPort {} is below port {n}", end.value),
                    );
                    d.label = Some("range end before its start".into());
                    d.help = Some(
                        "`endPort` is the inclusive end of the range starting at `port`".into(),
                    );
                }
            }
        }
    }

    fn l7(&mut self, pr: &PortRule, rules: &L7Rules, ports: &[PortProtocol], cx: Ctx) {
        let families = rules.families();
        let head = self.head(rules.loc.0);
        // Cilium's L7Rules.Sanitize: generic `l7` rules (even an empty
        // list) name their parser in `l7proto`.
        if rules.l7.is_some() && rules.l7proto.as_ref().is_none_or(|p| p.value.is_empty()) {
            self.err(
                Code::MissingField,
                head,
                "`l7` may only be given with `l7proto`, the name of the proxy parser",
            )
            .help =
                Some("add `l7proto: <parser>`, or use the `http`, `kafka` or `dns` rules".into());
        }
        if families.len() > 1 {
            self.err(
                Code::MultipleL7,
                head,
                format!(
                    "one port rule may carry one L7 protocol, this has {}",
                    families.join(" and ")
                ),
            )
            .help = Some("use separate `toPorts` elements for each protocol".into());
        }
        let is_dns = families == ["dns"];
        if rules.dns.is_some() && cx.dir == Direction::Ingress {
            self.err(
                Code::DnsOnIngress,
                head,
                "DNS rules are not allowed on ingress",
            )
            .help = Some(
                "DNS rules apply to the lookups an endpoint makes: put them under `egress`".into(),
            );
        }
        if cx.host {
            if cx.dir == Direction::Ingress {
                self.err(
                    Code::HostPolicyL7,
                    head,
                    "L7 rules are not supported on host ingress",
                );
            } else if rules.http.is_some() {
                self.err(
                    Code::HostPolicyL7,
                    head,
                    "HTTP rules are not supported on host egress",
                )
                .help = Some("only DNS rules can be enforced for the host at egress".into());
            }
        }
        if ports.is_empty() {
            let msg = if is_dns {
                "DNS rules need explicit ports (port 53 must be specified)"
            } else {
                "L7 rules can not be used without ports: that would match every port"
            };
            let code = if is_dns {
                Code::DnsPort
            } else {
                Code::L7PortZero
            };
            self.err(code, self.head(pr.loc.0), msg);
        }
        for p in ports {
            let proto = p.protocol.as_ref().map_or(Protocol::Any, |p| p.value);
            if !is_dns && proto != Protocol::Tcp {
                let span = p.protocol.as_ref().map_or(self.head(p.loc.0), |s| s.span());
                let d = self.err(
                    Code::L7OnNonTcp,
                    span,
                    format!("L7 rules can only apply to TCP, not {proto}, except for DNS rules"),
                );
                d.label = Some(format!("protocol is {proto}"));
                d.help = Some("set `protocol: TCP`".into());
            }
            if is_dns && !matches!(proto, Protocol::Tcp | Protocol::Udp | Protocol::Any) {
                self.err(
                    Code::DnsPort,
                    self.head(p.loc.0),
                    format!("DNS rules cannot apply to {proto}"),
                );
            }
            if let Some(Spanned {
                value: Port::Number(0),
                loc,
            }) = &p.port
            {
                self.err(
                    Code::L7PortZero,
                    loc.0,
                    "L7 rules can not be used when a port is 0",
                )
                .help = Some("name the port the L7 protocol is served on".into());
            }
            if is_dns {
                if let (Some(end), Some(Port::Number(n))) =
                    (&p.end_port, p.port.as_ref().map(|s| &s.value))
                {
                    if end.value > i64::from(*n) {
                        self.err(
                            Code::DnsPort,
                            end.span(),
                            "DNS rules do not support port ranges",
                        );
                    }
                }
            }
        }
        for h in rules.http.iter().flatten() {
            for (field, v) in [("method", &h.method), ("path", &h.path), ("host", &h.host)] {
                let Some(v) = v else { continue };
                if let Err(e) = check_regex(&v.value) {
                    let d = self.err(
                        Code::InvalidRegex,
                        v.span(),
                        format!("invalid regex in HTTP `{field}`: {e}"),
                    );
                    d.label = Some("does not compile".into());
                    d.help = Some("HTTP fields are RE2 regular expressions; escape literal characters such as `(`, `[` or `*` with `\\`".into());
                } else if let Some(m) = explosive_repetition(&v.value) {
                    let mut d = Diagnostic::warning(
                        Code::RegexSize,
                        v.span(),
                        format!(
                            "HTTP `{field}` repeats a class up to {m} times after an unbounded repetition: its automaton can grow to 2^{m} states"
                        ),
                    );
                    d.label = Some("may exceed the L7 automaton limits".into());
                    d.help = Some("bound what comes before it, or match the repeated part with `*` / `+` instead of a count".into());
                    self.diags.push(d);
                }
            }
            for hm in &h.header_matches {
                if hm.name.value.is_empty() {
                    self.err(
                        Code::HeaderMatch,
                        hm.name.span(),
                        "header match has an empty `name`",
                    );
                }
                if let Some(s) = &hm.secret {
                    if s.name.value.is_empty() {
                        self.err(
                            Code::HeaderMatch,
                            s.name.span(),
                            "header match secret has an empty `name`",
                        );
                    }
                }
            }
        }
        for k in rules.kafka.iter().flatten() {
            self.kafka(k);
        }
        for d in rules.dns.iter().flatten() {
            self.fqdn(
                d.loc,
                d.match_name.as_ref(),
                d.match_pattern.as_ref(),
                "a DNS rule",
            );
        }
    }

    fn kafka(&mut self, k: &KafkaRule) {
        if let (Some(role), Some(key)) = (&k.role, &k.api_key) {
            let d = self.err(
                Code::KafkaRule,
                key.span(),
                "a Kafka rule may set `role` or `apiKey`, not both",
            );
            d.related.push(crate::diag::Related {
                span: role.span(),
                message: "`role` set here".into(),
            });
        }
        if let Some(key) = &k.api_key {
            if !KAFKA_API_KEYS.contains(&key.value.to_ascii_lowercase().as_str()) {
                let d = self.err(
                    Code::KafkaRule,
                    key.span(),
                    format!("unknown Kafka apiKey `{}`", key.value),
                );
                d.help = Some(
                    match crate::suggest::did_you_mean(&key.value, KAFKA_API_KEYS) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("known keys: {}", KAFKA_API_KEYS.join(", ")),
                    },
                );
            }
        }
        if let Some(v) = &k.api_version {
            if v.value.parse::<i16>().map_or(true, |n| n < 0) {
                self.err(
                    Code::KafkaRule,
                    v.span(),
                    format!(
                        "Kafka apiVersion `{}` is not a non-negative integer",
                        v.value
                    ),
                );
            }
        }
        if let Some(t) = &k.topic {
            let bad = t.value.len() > 255
                || !t
                    .value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if bad {
                self.err(
                    Code::KafkaRule,
                    t.span(),
                    format!(
                        "invalid Kafka topic `{}`: at most 255 of a-z, A-Z, 0-9, `.`, `_`, `-`",
                        t.value
                    ),
                );
            }
        }
    }

    fn knp(&mut self, spec: &KnpSpec) {
        self.selector(&spec.pod_selector, true);
        for rule in spec.ingress.iter().chain(&spec.egress).flatten() {
            for peer in rule.peers.iter().flatten() {
                self.knp_peer(peer);
            }
            for port in rule.ports.iter().flatten() {
                self.knp_port(port);
            }
        }
    }

    fn knp_peer(&mut self, peer: &KnpPeer) {
        let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (&peer.ip_block, selectors) {
            (Some(b), true) => {
                self.err(
                    Code::KnpPeer,
                    self.head(b.loc.0),
                    "a peer may not combine `ipBlock` with `podSelector` or `namespaceSelector`",
                )
                .help = Some("use two peers: one with the selectors, one with the ipBlock".into());
            }
            (None, false) => {
                self.err(
                    Code::KnpPeer,
                    self.head(peer.loc.0),
                    "a peer needs `podSelector`, `namespaceSelector` or `ipBlock`",
                )
                .help = Some("to allow every peer, leave out `from`/`to` altogether".into());
            }
            _ => {}
        }
        for s in peer.pod_selector.iter().chain(&peer.namespace_selector) {
            self.selector(s, true);
        }
        if let Some(b) = &peer.ip_block {
            for e in &b.except {
                self.except(&b.cidr, e, true);
            }
        }
    }

    fn knp_port(&mut self, p: &KnpPort) {
        let Some(end) = &p.end_port else { return };
        match p.port.as_ref().map(|s| &s.value) {
            Some(Port::Number(n)) => {
                if !(1..=65535).contains(&end.value) {
                    self.err(
                        Code::InvalidEndPort,
                        end.span(),
                        format!("endPort {} is out of range 1-65535", end.value),
                    );
                } else if end.value < i64::from(*n) {
                    self.err(
                        Code::InvalidEndPort,
                        end.span(),
                        format!("endPort {} is below port {n}", end.value),
                    )
                    .label = Some("range end before its start".into());
                }
            }
            Some(Port::Named(_)) => {
                self.err(
                    Code::InvalidEndPort,
                    end.span(),
                    "`endPort` cannot be used with a named port",
                );
            }
            None => {
                self.err(
                    Code::InvalidEndPort,
                    end.span(),
                    "`endPort` needs a numeric `port`",
                );
            }
        }
    }
}

/// Kafka API key names Cilium accepts (case-insensitive).
pub const KAFKA_API_KEYS: &[&str] = &[
    "produce",
    "fetch",
    "offsets",
    "metadata",
    "leaderandisr",
    "stopreplica",
    "updatemetadata",
    "controlledshutdown",
    "offsetcommit",
    "offsetfetch",
    "findcoordinator",
    "joingroup",
    "heartbeat",
    "leavegroup",
    "syncgroup",
    "describegroups",
    "listgroups",
    "saslhandshake",
    "apiversions",
    "createtopics",
    "deletetopics",
    "deleterecords",
    "initproducerid",
    "offsetforleaderepoch",
    "addpartitionstotxn",
    "addoffsetstotxn",
    "endtxn",
    "writetxnmarkers",
    "txnoffsetcommit",
    "describeacls",
    "createacls",
    "deleteacls",
    "describeconfigs",
    "alterconfigs",
];

/// Compiles an HTTP field as the proxy would (RE2 syntax).
pub fn check_regex(re: &str) -> Result<(), String> {
    regex_syntax::ParserBuilder::new()
        .nest_limit(100)
        .build()
        .parse(re)
        .map(|_| ())
        .map_err(|e| {
            // regex-syntax's Display spans several lines with a caret; the
            // kind alone reads well in one line.
            match &e {
                regex_syntax::Error::Parse(p) => p.kind().to_string(),
                regex_syntax::Error::Translate(t) => t.kind().to_string(),
                other => other.to_string(),
            }
        })
}

/// A bounded repetition in `re` known to make automata explode: `{n,m}`
/// (m ≥ 16) over something that matches more than one byte value, in a
/// regex that also repeats without bound. Determinizing `.*x.{20}` has to
/// remember every position of the last 20 bytes: 2^20 states. Returns the
/// repetition's text (`{0,40}`) and its bound.
pub fn explosive_repetition(re: &str) -> Option<u32> {
    use regex_syntax::hir::{Hir, HirKind};
    let hir = regex_syntax::ParserBuilder::new()
        .nest_limit(100)
        .unicode(false)
        .utf8(false)
        .build()
        .parse(re)
        .ok()?;
    fn walk(h: &Hir, unbounded: &mut bool, worst: &mut u32) {
        match h.kind() {
            HirKind::Repetition(r) => {
                match r.max {
                    None => *unbounded = true,
                    Some(m) if m >= 16 && !matches!(r.sub.kind(), HirKind::Literal(_)) => {
                        *worst = (*worst).max(m);
                    }
                    _ => {}
                }
                walk(&r.sub, unbounded, worst);
            }
            HirKind::Capture(c) => walk(&c.sub, unbounded, worst),
            HirKind::Concat(v) | HirKind::Alternation(v) => {
                for x in v {
                    walk(x, unbounded, worst);
                }
            }
            _ => {}
        }
    }
    let (mut unbounded, mut worst) = (false, 0);
    walk(&hir, &mut unbounded, &mut worst);
    (unbounded && worst > 0).then_some(worst)
}

/// ICMP type names per family, as Cilium's `icmp.go` lists them.
const ICMP_V4: &[(&str, u8)] = &[
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

const ICMP_V6: &[(&str, u8)] = &[
    ("DestinationUnreachable", 1),
    ("PacketTooBig", 2),
    ("TimeExceeded", 3),
    ("ParameterProblem", 4),
    ("EchoRequest", 128),
    ("EchoReply", 129),
    ("MulticastListenerQuery", 130),
    ("MulticastListenerReport", 131),
    ("MulticastListenerDone", 132),
    ("RouterSolicitation", 133),
    ("RouterAdvertisement", 134),
    ("NeighborSolicitation", 135),
    ("NeighborAdvertisement", 136),
    ("RedirectMessage", 137),
    ("RouterRenumbering", 138),
    ("ICMPNodeInformationQuery", 139),
    ("ICMPNodeInformationResponse", 140),
    ("InverseNeighborDiscoverySolicitation", 141),
    ("InverseNeighborDiscoveryAdvertisement", 142),
    ("HomeAgentAddressDiscoveryRequest", 144),
    ("HomeAgentAddressDiscoveryReply", 145),
    ("MobilePrefixSolicitation", 146),
    ("MobilePrefixAdvertisement", 147),
    ("DuplicateAddressRequestCodeSuffix", 157),
    ("DuplicateAddressConfirmationCodeSuffix", 158),
    ("ExtendedEchoRequest", 160),
    ("ExtendedEchoReply", 161),
];

/// The numeric ICMP type of a field, checking names against the family.
pub fn icmp_type_number(t: &IcmpType, family: IcmpFamily) -> Result<u8, String> {
    match t {
        IcmpType::Number(n) => {
            u8::try_from(*n).map_err(|_| format!("ICMP type {n} is out of range 0-255"))
        }
        IcmpType::Name(name) => {
            if let Ok(n) = name.parse::<i64>() {
                return icmp_type_number(&IcmpType::Number(n), family);
            }
            let table = match family {
                IcmpFamily::V4 => ICMP_V4,
                IcmpFamily::V6 => ICMP_V6,
            };
            table
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                    match crate::suggest::did_you_mean(name, &names) {
                        Some(s) => {
                            format!("unknown {family} ICMP type `{name}`; did you mean `{s}`?")
                        }
                        None => format!("unknown {family} ICMP type `{name}`"),
                    }
                })
        }
    }
}

/// A DNS name or pattern as `toFQDNs` and DNS rules accept it.
pub fn check_dns_name(s: &str, wildcard: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 255 {
        return Err(format!("it has {} characters, the limit is 255", s.len()));
    }
    if let Some(c) = s.chars().find(|&c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') || (wildcard && c == '*'))
    }) {
        return Err(format!(
            "`{c}` is not allowed (letters, digits, `-`, `.`, `_`{})",
            if wildcard { ", `*`" } else { "" }
        ));
    }
    // The CRD's pattern is a list of labels each followed by at most one
    // dot: no leading dot, no empty label.
    if s.starts_with('.') || s.contains("..") {
        return Err("it has an empty label (a leading `.` or `..`)".into());
    }
    Ok(())
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// RFC 1123 subdomain, as Kubernetes checks object names.
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("must be 1-253 characters, has {}", s.len()));
    }
    // Dot-separated RFC 1123 labels: each starts and ends with a letter or
    // digit (so no empty label, no `-.` or `.-`).
    let ok = s.split('.').all(|l| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|&c| is_alnum(c) || c == b'-')
            && is_alnum(b[0])
            && is_alnum(b[b.len() - 1])
    });
    if !ok {
        return Err("must be lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or digit".into());
    }
    Ok(())
}

/// A TLS server name as the CRD's pattern admits it: an optional `*.` or
/// `**.` prefix, then DNS labels (letters, digits, `-`, `_`), at most 255
/// characters.
pub fn check_server_name(s: &str) -> Result<(), String> {
    if s.len() > 255 {
        return Err(format!("it has {} characters, the limit is 255", s.len()));
    }
    let rest = s
        .strip_prefix("**.")
        .or_else(|| s.strip_prefix("*."))
        .unwrap_or(s);
    if rest.contains('*') {
        return Err("`*` is only allowed as a leading `*.` or `**.`".into());
    }
    check_dns_name(rest, false)
}

/// RFC 1123 label, as Kubernetes checks namespace names.
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("must be 1-63 characters, has {}", s.len()));
    }
    let b = s.as_bytes();
    if !b.iter().all(|&c| is_alnum(c) || c == b'-') || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1])
    {
        return Err(
            "must be lowercase letters, digits and `-`, starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

fn check_label_name(s: &str, what: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "{what} must be at most 63 characters, has {}",
            s.len()
        ));
    }
    let b = s.as_bytes();
    if b.is_empty() {
        return Ok(());
    }
    let ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    if !b.iter().all(|&c| ok(c))
        || !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
    {
        return Err(format!(
            "{what} must be letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
pub fn check_label_value(s: &str) -> Result<(), String> {
    check_label_name(s, "a label value")
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn check_label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if name.is_empty() {
        return Err("the name part is empty".into());
    }
    check_label_name(name, "the name part")?;
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|e| format!("the prefix {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        assert!(check_dns_subdomain("l3-rule.v1").is_ok());
        assert!(check_dns_subdomain("L3").is_err());
        assert!(check_dns_subdomain("-a").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("a.b_c-d").is_ok());
        assert!(check_label_value("a b").is_err());
        assert!(check_label_value(&"a".repeat(64)).is_err());
        assert!(check_label_key("app.kubernetes.io/name").is_ok());
        assert!(check_label_key("io.kubernetes.pod.namespace").is_ok());
        assert!(check_label_key("/x").is_err());
    }

    #[test]
    fn icmp_types() {
        assert_eq!(
            icmp_type_number(&IcmpType::Name("EchoRequest".into()), IcmpFamily::V4),
            Ok(8)
        );
        assert_eq!(
            icmp_type_number(&IcmpType::Name("EchoRequest".into()), IcmpFamily::V6),
            Ok(128)
        );
        assert!(icmp_type_number(&IcmpType::Name("PacketTooBig".into()), IcmpFamily::V4).is_err());
        assert!(icmp_type_number(&IcmpType::Number(256), IcmpFamily::V4).is_err());
    }

    #[test]
    fn regexes() {
        assert!(check_regex("/v1/.*").is_ok());
        assert!(check_regex("GET|POST").is_ok());
        assert!(check_regex("/api/(v1").is_err());
        assert!(check_regex("*foo").is_err());
    }

    #[test]
    fn from_nodes_needs_node_selector_labels() {
        let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: nodes}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromNodes: [{matchLabels: {role: w}}]\n";
        let off = crate::parse_source("n.yaml", text, &crate::LoadOptions::default());
        assert!(off
            .diagnostics
            .iter()
            .any(|d| d.code == Code::NodeSelectorLabels && d.is_error()));
        let opts = crate::LoadOptions {
            validate: ValidateOptions {
                node_selector_labels: true,
                ..ValidateOptions::default()
            },
            ..crate::LoadOptions::default()
        };
        let on = crate::parse_source("n.yaml", text, &opts);
        assert_eq!(on.error_count(), 0, "{:?}", on.diagnostics);
    }

    #[test]
    fn services_with_ports_are_refused_in_allow_rules_only() {
        let rule = |list: &str| {
            format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: s, namespace: a}}\nspec:\n  endpointSelector: {{}}\n  {list}:\n  - toServices: [{{k8sService: {{serviceName: db, namespace: a}}}}]\n    toPorts: [{{ports: [{{port: \"5432\"}}]}}]\n")
        };
        let allow = crate::parse_source("s.yaml", &rule("egress"), &crate::LoadOptions::default());
        let d = allow
            .diagnostics
            .iter()
            .find(|d| d.code == Code::CombinedL3 && d.is_error())
            .expect("refused");
        assert_eq!(d.span.map(|s| s.line), Some(8), "points at toPorts");
        // The agent does not sanitize deny lists: Cilium accepts it there.
        let deny = crate::parse_source(
            "s.yaml",
            &rule("egressDeny"),
            &crate::LoadOptions::default(),
        );
        assert_eq!(deny.error_count(), 0, "{:?}", deny.diagnostics);
    }

    #[test]
    fn generic_l7_rules_need_their_parser() {
        let rule = |l7: &str| {
            format!("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: g, namespace: a}}\nspec:\n  endpointSelector: {{}}\n  ingress:\n  - toPorts:\n    - ports: [{{port: \"80\", protocol: TCP}}]\n      rules: {{{l7}}}\n")
        };
        let errors = |text: &str| {
            crate::parse_source("g.yaml", text, &crate::LoadOptions::default()).error_count()
        };
        assert_eq!(errors(&rule("l7: [{action: x}]")), 1, "l7 without l7proto");
        assert_eq!(errors(&rule("l7: []")), 1, "even an empty list");
        assert_eq!(errors(&rule("l7proto: envoy.custom, l7: [{action: x}]")), 0);
    }
}
