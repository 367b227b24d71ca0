//! Property: rendering any IR to YAML and parsing it back gives the same IR.
//!
//! Random policies cover every kind and most fields; strings include quotes,
//! colons, `#`, newlines and non-ASCII text so that the emitter's quoting is
//! exercised as hard as the structure.

use policy_lang::ir::*;
use policy_lang::source::{Loc, Spanned};
use policy_lang::{parse_source, render, LoadOptions};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use std::net::IpAddr;

fn sp<T>(v: T) -> Spanned<T> {
    Spanned {
        value: v,
        loc: Loc::default(),
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}",
        "[ -~]{0,12}",
        Just("yes".to_owned()),
        Just("80".to_owned()),
        Just("a: b # c".to_owned()),
        Just("line\nbreak\t\"quoted\" \\ é ☃".to_owned()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}"
}

fn label_key() -> impl Strategy<Value = LabelKey> {
    (option::of("[a-z0-9]{1,6}"), "[a-z][a-z0-9./_-]{0,15}")
        .prop_map(|(source, key)| LabelKey { source, key })
}

fn selector() -> impl Strategy<Value = Selector> {
    let req = (
        label_key(),
        prop_oneof![
            Just(Operator::In),
            Just(Operator::NotIn),
            Just(Operator::Exists),
            Just(Operator::DoesNotExist)
        ],
        vec(text(), 0..3),
    )
        .prop_map(|(k, op, vals)| Requirement {
            loc: Loc::default(),
            key: sp(k),
            operator: sp(op),
            values: vals.into_iter().map(sp).collect(),
        });
    (btree_map(label_key(), text(), 0..3), vec(req, 0..2)).prop_map(|(labels, exprs)| Selector {
        loc: Loc::default(),
        match_labels: labels.into_iter().map(|(k, v)| (sp(k), sp(v))).collect(),
        match_expressions: exprs,
    })
}

fn cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| (IpAddr::from(a), l, 32)),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, l)| (IpAddr::from(a), l, 128)),
    ]
    // Always written with a prefix length: a bare address is not a valid
    // CIDR to the API server.
    .prop_map(|(addr, len, _max)| Cidr {
        addr,
        prefix_len: len,
        bare: false,
    })
}

fn port() -> impl Strategy<Value = Port> {
    prop_oneof![
        any::<u16>().prop_map(Port::Number),
        "[a-z]{1,6}(-[a-z0-9]{1,4})?".prop_map(Port::Named),
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(vec![
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Sctp,
        Protocol::Any,
        Protocol::Vrrp,
    ])
}

fn l7() -> impl Strategy<Value = L7Rules> {
    let http = (
        option::of(text()),
        option::of(text()),
        option::of(text()),
        vec(text(), 0..2),
    )
        .prop_map(|(m, p, h, headers)| HttpRule {
            loc: Loc::default(),
            method: m.map(sp),
            path: p.map(sp),
            host: h.map(sp),
            headers: headers.into_iter().map(sp).collect(),
            header_matches: vec![],
        });
    let dns = (option::of(name()), option::of("\\*\\.[a-z]{1,5}")).prop_map(|(n, p)| DnsRule {
        loc: Loc::default(),
        match_name: n.map(sp),
        match_pattern: p.map(sp),
    });
    let kafka = (
        option::of(prop::sample::select(vec![
            KafkaRole::Produce,
            KafkaRole::Consume,
        ])),
        option::of(name()),
    )
        .prop_map(|(role, topic)| KafkaRule {
            loc: Loc::default(),
            role: role.map(sp),
            topic: topic.map(sp),
            ..KafkaRule::default()
        });
    (
        option::of(vec(http, 0..3)),
        option::of(vec(dns, 0..2)),
        option::of(vec(kafka, 0..2)),
    )
        .prop_map(|(http, dns, kafka)| L7Rules {
            loc: Loc::default(),
            http,
            dns,
            kafka,
            ..L7Rules::default()
        })
}

fn port_rule(allow: bool) -> impl Strategy<Value = PortRule> {
    let pp = (
        option::of(port()),
        option::of(0i64..70000),
        option::of(protocol()),
    )
        .prop_map(|(port, end, proto)| PortProtocol {
            loc: Loc::default(),
            port: port.map(sp),
            end_port: end.map(sp),
            protocol: proto.map(sp),
        });
    (
        option::of(vec(pp, 0..3)),
        option::of(l7()),
        option::of(vec(name(), 0..2)),
    )
        .prop_map(move |(ports, rules, sni)| PortRule {
            loc: Loc::default(),
            ports,
            rules: if allow { rules.map(Box::new) } else { None },
            server_names: if allow {
                sni.map(|v| v.into_iter().map(sp).collect())
            } else {
                None
            },
            ..PortRule::default()
        })
}

fn peer_rule(egress: bool, allow: bool) -> impl Strategy<Value = PeerRule> {
    let crd: Vec<Entity> = Entity::NAMES
        .iter()
        .filter_map(|n| Entity::parse(n))
        .filter(|e| e.in_crd())
        .collect();
    let entity = prop::sample::select(crd);
    let cidr_rule =
        (option::of(cidr()), vec(cidr(), 0..2), option::of(name())).prop_map(|(c, ex, g)| {
            CidrRule {
                loc: Loc::default(),
                cidr: c.map(sp),
                except: ex.into_iter().map(sp).collect(),
                cidr_group_ref: g.map(sp),
                cidr_group_selector: None,
            }
        });
    let fqdn =
        (option::of(name()), option::of("\\*\\.[a-z]{1,8}")).prop_map(|(n, p)| FqdnSelector {
            loc: Loc::default(),
            match_name: n.map(sp),
            match_pattern: p.map(sp),
        });
    let icmp = vec(
        (
            option::of(prop::sample::select(vec![IcmpFamily::V4, IcmpFamily::V6])),
            prop_oneof![
                (0i64..300).prop_map(IcmpType::Number),
                Just(IcmpType::Name("EchoRequest".into())),
            ],
        )
            .prop_map(|(f, t)| IcmpField {
                loc: Loc::default(),
                family: f.map(sp),
                icmp_type: sp(t),
            }),
        0..3,
    )
    .prop_map(|fields| IcmpRule {
        loc: Loc::default(),
        fields,
    });
    (
        option::of(vec(selector(), 0..3)),
        option::of(vec(selector(), 0..2)),
        option::of(vec(cidr().prop_map(sp), 0..3)),
        option::of(vec(cidr_rule, 0..2)),
        option::of(vec(entity.prop_map(sp), 0..3)),
        option::of(vec(fqdn, 0..2)),
        option::of(vec(port_rule(allow), 0..2)),
        option::of(vec(icmp, 0..2)),
        option::of(prop::sample::select(vec![
            AuthMode::Required,
            AuthMode::Disabled,
        ])),
    )
        .prop_map(move |(ep, req, c, cs, ent, fq, tp, icmps, auth)| PeerRule {
            loc: Loc::default(),
            endpoints: ep,
            requires: req,
            cidr: c,
            cidr_set: cs,
            entities: ent,
            fqdns: if egress && allow { fq } else { None },
            to_ports: tp,
            icmps,
            authentication: if allow { auth.map(sp) } else { None },
            ..PeerRule::default()
        })
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        any::<bool>(),
        selector(),
        option::of(vec(peer_rule(false, true), 0..3)),
        option::of(vec(peer_rule(false, false), 0..2)),
        option::of(vec(peer_rule(true, true), 0..3)),
        option::of(vec(peer_rule(true, false), 0..2)),
        option::of(text()),
        option::of((option::of(any::<bool>()), option::of(any::<bool>()))),
    )
        .prop_map(|(host, sel, i, id, e, ed, desc, dd)| Rule {
            loc: Loc::default(),
            endpoint_selector: (!host).then(|| sel.clone()),
            node_selector: host.then_some(sel),
            ingress: i,
            ingress_deny: id,
            egress: e,
            egress_deny: ed,
            labels: None,
            description: desc.map(sp),
            enable_default_deny: dd.map(|(ingress, egress)| DefaultDeny { ingress, egress }),
            log: None,
        })
}

fn knp() -> impl Strategy<Value = KnpSpec> {
    let peer = (
        option::of(selector()),
        option::of(selector()),
        option::of((cidr(), vec(cidr(), 0..2))),
    )
        .prop_map(|(pod, ns, ip)| KnpPeer {
            loc: Loc::default(),
            pod_selector: pod,
            namespace_selector: ns,
            ip_block: ip.map(|(c, ex)| IpBlock {
                loc: Loc::default(),
                cidr: sp(c),
                except: ex.into_iter().map(sp).collect(),
            }),
        });
    let kport = (
        option::of(prop::sample::select(vec![
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
        ])),
        option::of(prop_oneof![
            (1u16..).prop_map(Port::Number),
            "[a-z]{1,8}".prop_map(Port::Named)
        ]),
        option::of(1i64..65536),
    )
        .prop_map(|(pr, p, e)| KnpPort {
            loc: Loc::default(),
            protocol: pr.map(sp),
            port: p.map(sp),
            end_port: e.map(sp),
        });
    let krule = (option::of(vec(peer, 0..3)), option::of(vec(kport, 0..3)))
        .prop_map(|(peers, ports)| KnpRule {
            loc: Loc::default(),
            peers,
            ports,
        })
        .boxed();
    (
        selector(),
        option::of(vec(krule.clone(), 0..3)),
        option::of(vec(krule, 0..3)),
        option::of(vec(
            prop::sample::select(vec![PolicyType::Ingress, PolicyType::Egress]).prop_map(sp),
            0..3,
        )),
    )
        .prop_map(|(pod_selector, ingress, egress, policy_types)| KnpSpec {
            loc: Loc::default(),
            pod_selector,
            ingress,
            egress,
            policy_types,
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    let body = prop_oneof![
        (option::of(rule()), option::of(vec(rule(), 0..3)))
            .prop_map(|(spec, specs)| (true, PolicyBody::Cilium(CiliumSpec { spec, specs }))),
        knp().prop_map(|k| (false, PolicyBody::Kubernetes(k))),
    ];
    (
        name(),
        option::of(name()),
        any::<bool>(),
        btree_map("[a-z]{1,5}", text(), 0..2),
        body,
    )
        .prop_map(|(name, ns, clusterwide, labels, (cilium, body))| {
            let kind = match (cilium, clusterwide) {
                (false, _) => PolicyKind::NetworkPolicy,
                (true, false) => PolicyKind::CiliumNetworkPolicy,
                (true, true) => PolicyKind::CiliumClusterwideNetworkPolicy,
            };
            Policy {
                kind,
                name: sp(name),
                namespace: if kind.is_namespaced() {
                    ns.map(sp)
                } else {
                    None
                },
                labels,
                annotations: Default::default(),
                file: Default::default(),
                loc: Loc::default(),
                body,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_of_render_is_identity(policies in vec(policy(), 1..4)) {
        let set = PolicySet { policies };
        let text = render::render_set(&set);
        let loaded = parse_source("rendered.yaml", &text, &LoadOptions::default());
        let schema_errors: Vec<_> = loaded
            .diagnostics
            .iter()
            .filter(|d| matches!(d.code.name(), "yaml-syntax" | "unknown-field" | "type-mismatch" | "duplicate-key"))
            .map(|d| d.render(&loaded.sources, false))
            .collect();
        prop_assert!(schema_errors.is_empty(), "{:?}\n{}", schema_errors, text);
        prop_assert_eq!(&loaded.set, &set, "\n{}", text);
    }
}
