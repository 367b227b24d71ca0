//! IR back to YAML, in the resources' own schema.
//!
//! The output is plain block YAML with every string double-quoted, so it
//! reads back to the same IR whatever the strings contain:
//! `parse(render(ir)) == ir` is a property test. Rendering is also what a
//! future `sluice fmt` builds on.

use crate::ir::*;
use crate::source::Spanned;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A YAML value to emit.
#[derive(Clone, Debug)]
enum Y {
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

/// Renders every policy of the set as one multi-document YAML stream.
pub fn render_set(set: &PolicySet) -> String {
    let mut out = String::new();
    for p in &set.policies {
        out.push_str("---\n");
        out.push_str(&render_policy(p));
    }
    out
}

pub fn render_policy(p: &Policy) -> String {
    let mut meta = vec![("name".to_owned(), s(&p.name))];
    if let Some(ns) = &p.namespace {
        meta.push(("namespace".into(), s(ns)));
    }
    if !p.labels.is_empty() {
        meta.push(("labels".into(), str_map(&p.labels)));
    }
    if !p.annotations.is_empty() {
        meta.push(("annotations".into(), str_map(&p.annotations)));
    }
    let mut top = vec![
        ("apiVersion".to_owned(), Y::Str(p.kind.api_version().into())),
        ("kind".into(), Y::Str(p.kind.as_str().into())),
        ("metadata".into(), Y::Map(meta)),
    ];
    match &p.body {
        PolicyBody::Cilium(c) => {
            if let Some(r) = &c.spec {
                top.push(("spec".into(), rule(r)));
            }
            if let Some(rs) = &c.specs {
                top.push(("specs".into(), Y::Seq(rs.iter().map(rule).collect())));
            }
        }
        PolicyBody::Kubernetes(k) => top.push(("spec".into(), knp(k))),
    }
    let mut out = String::new();
    emit_map(&mut out, &top, 0);
    out
}

fn s(v: &Spanned<String>) -> Y {
    Y::Str(v.value.clone())
}

fn str_map(m: &BTreeMap<String, String>) -> Y {
    Y::Map(
        m.iter()
            .map(|(k, v)| (k.clone(), Y::Str(v.clone())))
            .collect(),
    )
}

/// Builds a mapping from optional entries.
struct M(Vec<(String, Y)>);

impl M {
    fn new() -> Self {
        M(Vec::new())
    }
    fn put(mut self, k: &str, v: Option<Y>) -> Self {
        if let Some(v) = v {
            self.0.push((k.to_owned(), v));
        }
        self
    }
    fn done(self) -> Y {
        Y::Map(self.0)
    }
}

fn list<T>(v: &Option<Vec<T>>, f: impl Fn(&T) -> Y) -> Option<Y> {
    v.as_ref().map(|v| Y::Seq(v.iter().map(f).collect()))
}

fn nonempty<T>(v: &[T], f: impl Fn(&T) -> Y) -> Option<Y> {
    (!v.is_empty()).then(|| Y::Seq(v.iter().map(f).collect()))
}

fn opt_s(v: &Option<Spanned<String>>) -> Option<Y> {
    v.as_ref().map(s)
}

fn rule(r: &Rule) -> Y {
    M::new()
        .put(
            "endpointSelector",
            r.endpoint_selector.as_ref().map(selector),
        )
        .put("nodeSelector", r.node_selector.as_ref().map(selector))
        .put("ingress", list(&r.ingress, |p| peer(p, Direction::Ingress)))
        .put(
            "ingressDeny",
            list(&r.ingress_deny, |p| peer(p, Direction::Ingress)),
        )
        .put("egress", list(&r.egress, |p| peer(p, Direction::Egress)))
        .put(
            "egressDeny",
            list(&r.egress_deny, |p| peer(p, Direction::Egress)),
        )
        .put(
            "labels",
            list(&r.labels, |l| {
                M::new()
                    .put("key", Some(Y::Str(l.key.clone())))
                    .put("value", l.value.clone().map(Y::Str))
                    .put("source", l.source.clone().map(Y::Str))
                    .done()
            }),
        )
        .put("description", opt_s(&r.description))
        .put(
            "enableDefaultDeny",
            r.enable_default_deny.as_ref().map(|d| {
                M::new()
                    .put("ingress", d.ingress.map(Y::Bool))
                    .put("egress", d.egress.map(Y::Bool))
                    .done()
            }),
        )
        .put(
            "log",
            r.log
                .as_ref()
                .map(|l| M::new().put("value", Some(s(l))).done()),
        )
        .done()
}

fn selector(sel: &Selector) -> Y {
    M::new()
        .put(
            "matchLabels",
            (!sel.match_labels.is_empty()).then(|| {
                Y::Map(
                    sel.match_labels
                        .iter()
                        .map(|(k, v)| (k.value.to_string(), s(v)))
                        .collect(),
                )
            }),
        )
        .put(
            "matchExpressions",
            nonempty(&sel.match_expressions, |r| {
                M::new()
                    .put("key", Some(Y::Str(r.key.value.to_string())))
                    .put("operator", Some(Y::Str(r.operator.value.as_str().into())))
                    .put("values", nonempty(&r.values, s))
                    .done()
            }),
        )
        .done()
}

fn cidr(c: &Spanned<Cidr>) -> Y {
    Y::Str(c.value.to_string())
}

fn peer(p: &PeerRule, dir: Direction) -> Y {
    let x = dir.peer_prefix();
    let f = |name: &str| format!("{x}{name}");
    M::new()
        .put(&f("Endpoints"), list(&p.endpoints, selector))
        .put(&f("Requires"), list(&p.requires, selector))
        .put(&f("CIDR"), list(&p.cidr, cidr))
        .put(
            &f("CIDRSet"),
            list(&p.cidr_set, |c| {
                M::new()
                    .put("cidr", c.cidr.as_ref().map(cidr))
                    .put("except", nonempty(&c.except, cidr))
                    .put("cidrGroupRef", opt_s(&c.cidr_group_ref))
                    .put(
                        "cidrGroupSelector",
                        c.cidr_group_selector.as_ref().map(selector),
                    )
                    .done()
            }),
        )
        .put(
            &f("Entities"),
            list(&p.entities, |e| Y::Str(e.value.as_str().into())),
        )
        .put(&f("Nodes"), list(&p.nodes, selector))
        .put(
            &f("Groups"),
            list(&p.groups, |g| {
                let a = &g.aws;
                let strs = |v: &[String]| nonempty(v, |s| Y::Str(s.clone()));
                let aws = M::new()
                    .put("labels", (!a.labels.is_empty()).then(|| str_map(&a.labels)))
                    .put("securityGroupsIds", strs(&a.security_groups_ids))
                    .put("securityGroupsNames", strs(&a.security_groups_names))
                    .put("region", a.region.clone().map(Y::Str))
                    .done();
                M::new().put("aws", Some(aws)).done()
            }),
        )
        .put(
            "toServices",
            list(&p.services, |sv| {
                M::new()
                    .put(
                        "k8sService",
                        sv.k8s_service.as_ref().map(|n| {
                            M::new()
                                .put("serviceName", opt_s(&n.service_name))
                                .put("namespace", opt_s(&n.namespace))
                                .done()
                        }),
                    )
                    .put(
                        "k8sServiceSelector",
                        sv.k8s_service_selector.as_ref().map(|n| {
                            M::new()
                                .put("selector", Some(selector(&n.selector)))
                                .put("namespace", opt_s(&n.namespace))
                                .done()
                        }),
                    )
                    .done()
            }),
        )
        .put(
            "toFQDNs",
            list(&p.fqdns, |q| {
                M::new()
                    .put("matchName", opt_s(&q.match_name))
                    .put("matchPattern", opt_s(&q.match_pattern))
                    .done()
            }),
        )
        .put("toPorts", list(&p.to_ports, port_rule))
        .put(
            "icmps",
            list(&p.icmps, |r| {
                let fields = Y::Seq(
                    r.fields
                        .iter()
                        .map(|f| {
                            let t = match &f.icmp_type.value {
                                IcmpType::Number(n) => Y::Int(*n),
                                IcmpType::Name(n) => Y::Str(n.clone()),
                            };
                            M::new()
                                .put(
                                    "family",
                                    f.family.as_ref().map(|x| Y::Str(x.value.as_str().into())),
                                )
                                .put("type", Some(t))
                                .done()
                        })
                        .collect(),
                );
                M::new().put("fields", Some(fields)).done()
            }),
        )
        .put(
            "authentication",
            p.authentication.as_ref().map(|a| {
                M::new()
                    .put("mode", Some(Y::Str(a.value.as_str().into())))
                    .done()
            }),
        )
        .done()
}

fn secret(r: &SecretRef) -> Y {
    M::new()
        .put("namespace", opt_s(&r.namespace))
        .put("name", Some(s(&r.name)))
        .done()
}

fn tls(t: &TlsContext) -> Y {
    M::new()
        .put("secret", t.secret.as_ref().map(secret))
        .put("trustedCA", t.trusted_ca.clone().map(Y::Str))
        .put("certificate", t.certificate.clone().map(Y::Str))
        .put("privateKey", t.private_key.clone().map(Y::Str))
        .done()
}

fn port_rule(pr: &PortRule) -> Y {
    M::new()
        .put(
            "ports",
            list(&pr.ports, |p| {
                M::new()
                    .put("port", p.port.as_ref().map(|x| Y::Str(x.value.to_string())))
                    .put("endPort", p.end_port.as_ref().map(|e| Y::Int(e.value)))
                    .put(
                        "protocol",
                        p.protocol.as_ref().map(|x| Y::Str(x.value.as_str().into())),
                    )
                    .done()
            }),
        )
        .put("rules", pr.rules.as_deref().map(l7))
        .put("terminatingTLS", pr.terminating_tls.as_deref().map(tls))
        .put("originatingTLS", pr.originating_tls.as_deref().map(tls))
        .put("serverNames", list(&pr.server_names, s))
        .put(
            "listener",
            pr.listener.as_ref().map(|l| {
                M::new()
                    .put(
                        "envoyConfig",
                        Some(
                            M::new()
                                .put("kind", opt_s(&l.envoy_config.kind))
                                .put("name", Some(s(&l.envoy_config.name)))
                                .done(),
                        ),
                    )
                    .put("name", Some(s(&l.name)))
                    .put("priority", l.priority.as_ref().map(|p| Y::Int(p.value)))
                    .done()
            }),
        )
        .done()
}

fn l7(r: &L7Rules) -> Y {
    M::new()
        .put(
            "http",
            list(&r.http, |h| {
                M::new()
                    .put("method", opt_s(&h.method))
                    .put("path", opt_s(&h.path))
                    .put("host", opt_s(&h.host))
                    .put("headers", nonempty(&h.headers, s))
                    .put(
                        "headerMatches",
                        nonempty(&h.header_matches, |m| {
                            M::new()
                                .put("name", Some(s(&m.name)))
                                .put("value", opt_s(&m.value))
                                .put("secret", m.secret.as_ref().map(secret))
                                .put(
                                    "mismatch",
                                    m.mismatch.as_ref().map(|x| Y::Str(x.value.as_str().into())),
                                )
                                .done()
                        }),
                    )
                    .done()
            }),
        )
        .put(
            "kafka",
            list(&r.kafka, |k| {
                M::new()
                    .put(
                        "role",
                        k.role.as_ref().map(|x| Y::Str(x.value.as_str().into())),
                    )
                    .put("apiKey", opt_s(&k.api_key))
                    .put("apiVersion", opt_s(&k.api_version))
                    .put("clientID", opt_s(&k.client_id))
                    .put("topic", opt_s(&k.topic))
                    .done()
            }),
        )
        .put(
            "dns",
            list(&r.dns, |d| {
                M::new()
                    .put("matchName", opt_s(&d.match_name))
                    .put("matchPattern", opt_s(&d.match_pattern))
                    .done()
            }),
        )
        .put("l7proto", opt_s(&r.l7proto))
        .put("l7", list(&r.l7, str_map))
        .done()
}

fn knp(k: &KnpSpec) -> Y {
    let rules = |v: &Option<Vec<KnpRule>>, peers: &str| {
        list(v, |r| {
            M::new()
                .put(
                    peers,
                    list(&r.peers, |p| {
                        M::new()
                            .put("podSelector", p.pod_selector.as_ref().map(selector))
                            .put(
                                "namespaceSelector",
                                p.namespace_selector.as_ref().map(selector),
                            )
                            .put(
                                "ipBlock",
                                p.ip_block.as_ref().map(|b| {
                                    M::new()
                                        .put("cidr", Some(cidr(&b.cidr)))
                                        .put("except", nonempty(&b.except, cidr))
                                        .done()
                                }),
                            )
                            .done()
                    }),
                )
                .put(
                    "ports",
                    list(&r.ports, |p| {
                        M::new()
                            .put(
                                "protocol",
                                p.protocol.as_ref().map(|x| Y::Str(x.value.as_str().into())),
                            )
                            .put(
                                "port",
                                p.port.as_ref().map(|x| match &x.value {
                                    Port::Number(n) => Y::Int(i64::from(*n)),
                                    Port::Named(n) => Y::Str(n.clone()),
                                }),
                            )
                            .put("endPort", p.end_port.as_ref().map(|e| Y::Int(e.value)))
                            .done()
                    }),
                )
                .done()
        })
    };
    M::new()
        .put("podSelector", Some(selector(&k.pod_selector)))
        .put("ingress", rules(&k.ingress, "from"))
        .put("egress", rules(&k.egress, "to"))
        .put(
            "policyTypes",
            list(&k.policy_types, |t| Y::Str(t.value.as_str().into())),
        )
        .done()
}

// ---------------------------------------------------------------------------
// Emitter

fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{85}' || c == '\u{feff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn scalar(out: &mut String, v: &Y) -> bool {
    match v {
        Y::Str(s) => quote(out, s),
        Y::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Y::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Y::Seq(items) if items.is_empty() => out.push_str("[]"),
        Y::Map(entries) if entries.is_empty() => out.push_str("{}"),
        _ => return false,
    }
    true
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn emit_map(out: &mut String, entries: &[(String, Y)], ind: usize) {
    for (k, v) in entries {
        indent(out, ind);
        quote(out, k);
        out.push(':');
        let mut line = String::new();
        if scalar(&mut line, v) {
            out.push(' ');
            out.push_str(&line);
            out.push('\n');
        } else {
            out.push('\n');
            emit(out, v, ind + 2);
        }
    }
}

fn emit(out: &mut String, v: &Y, ind: usize) {
    match v {
        Y::Map(entries) => emit_map(out, entries, ind),
        Y::Seq(items) => {
            for item in items {
                indent(out, ind);
                out.push('-');
                let mut line = String::new();
                if scalar(&mut line, item) {
                    out.push(' ');
                    out.push_str(&line);
                    out.push('\n');
                } else {
                    out.push('\n');
                    emit(out, item, ind + 2);
                }
            }
        }
        other => {
            indent(out, ind);
            scalar(out, other);
            out.push('\n');
        }
    }
}
