//! Random policies, inventories and flows for differential tests: the
//! simulator's two evaluators against each other, and (in the agent crate)
//! the kernel datapath against the simulator. Enabled by the `testgen`
//! feature; not part of the normal build.
//!
//! The vocabulary is small on purpose (three namespaces, four apps, a few
//! ports, CIDRs and entities) so that random rules often select random pods:
//! a generator whose rules never match would test nothing.

use crate::flow::PeerRef;
use compiler::inventory::{ContainerPort, Inventory, Namespace, NodeInfo, Pod};
use policy_lang::ir::*;
use policy_lang::source::{Loc, Spanned};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

pub fn sp<T>(v: T) -> Spanned<T> {
    Spanned {
        value: v,
        loc: Loc::default(),
    }
}

pub const NAMESPACES: &[&str] = &["a", "b", "c"];
pub const APPS: &[&str] = &["web", "db", "api", "cache"];
pub const WORLD_IPS: &[&str] = &[
    "8.8.8.8",
    "1.2.3.4",
    "10.200.0.5",
    "10.200.1.7",
    "172.16.0.9",
];
pub const NODE_IPS: &[&str] = &["192.168.0.1", "192.168.0.2"];
pub const CIDRS: &[(&str, &[&str])] = &[
    ("10.200.0.0/16", &[]),
    ("10.200.0.0/16", &["10.200.1.0/24"]),
    ("8.8.8.0/24", &[]),
    ("0.0.0.0/0", &[]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("10.0.0.0/8", &[]),
    ("172.16.0.9/32", &[]),
    // Exceptions as Cilium expands them: all of /0, nested and overlapping.
    ("0.0.0.0/0", &["0.0.0.0/0"]),
    (
        "10.200.0.0/16",
        &["10.200.1.0/24", "10.200.1.128/25", "10.200.0.0/17"],
    ),
];
pub const PORTS: &[(u16, u8, Option<&str>)] = &[
    (80, 6, Some("http")),
    (8080, 6, Some("http")),
    (9090, 6, Some("metrics")),
    (53, 17, Some("dns")),
    (81, 6, None),
];

/// A generated pod: namespace, app, tier, node, container ports (indexes).
pub type PodSpec = (usize, usize, Option<usize>, usize, Vec<usize>);

pub fn pod_strategy() -> impl Strategy<Value = PodSpec> {
    (
        0..NAMESPACES.len(),
        0..APPS.len(),
        option::of(0..2usize),
        0..2usize,
        vec(0..PORTS.len(), 0..3),
    )
}

pub fn inventory(pods: Vec<PodSpec>, ns_team: Vec<usize>) -> Inventory {
    let mut inv = Inventory {
        cluster: "default".into(),
        ..Inventory::default()
    };
    for (i, ns) in NAMESPACES.iter().enumerate() {
        inv.namespaces.insert(
            ns.to_string(),
            Namespace {
                name: ns.to_string(),
                labels: BTreeMap::from([
                    ("kubernetes.io/metadata.name".into(), ns.to_string()),
                    ("team".into(), ["red", "blue"][ns_team[i] % 2].into()),
                ]),
            },
        );
    }
    for (i, ip) in NODE_IPS.iter().enumerate() {
        inv.nodes.push(NodeInfo {
            name: format!("n{i}"),
            labels: BTreeMap::from([("zone".into(), format!("z{i}"))]),
            ips: vec![ip.parse().expect("ip")],
            loc: Loc::default(),
        });
    }
    for (i, (ns, app, tier, node, ports)) in pods.into_iter().enumerate() {
        let mut labels = BTreeMap::from([("app".to_owned(), APPS[app].to_owned())]);
        if let Some(t) = tier {
            labels.insert("tier".into(), ["front", "back"][t].into());
        }
        // Labels Cilium's filter drops, keeps, or strips as its own.
        let (key, value) = [
            ("pod-template-hash", "h1"),
            ("job-name", "nightly"),
            ("io.cilium.k8s.policy.serviceaccount", "spoofed"),
            ("kubernetes.io/role", "x"),
        ][i % 4];
        labels.insert(key.to_owned(), value.to_owned());
        let mut cports: Vec<ContainerPort> = Vec::new();
        for p in ports {
            let (port, protocol, name) = PORTS[p];
            let cp = ContainerPort {
                name: name.map(str::to_owned),
                port,
                protocol,
            };
            if !cports.iter().any(|c| c.name == cp.name) {
                cports.push(cp);
            }
        }
        inv.pods.push(Pod {
            name: format!("p{i}"),
            namespace: NAMESPACES[ns].into(),
            labels,
            service_account: "default".into(),
            node: Some(format!("n{node}")),
            ips: vec![format!("10.0.{}.{}", ns, i + 10).parse().expect("ip")],
            host_network: false,
            ports: cports,
            workload: None,
            loc: Loc::default(),
            ip_locs: vec![],
        });
    }
    inv
}

pub fn label_selector() -> impl Strategy<Value = Selector> {
    let pair = prop_oneof![
        (0..APPS.len()).prop_map(|a| ("app".to_owned(), APPS[a].to_owned())),
        (0..2usize).prop_map(|t| ("tier".to_owned(), ["front", "back"][t].to_owned())),
        (0..NAMESPACES.len()).prop_map(|n| (
            "k8s:io.kubernetes.pod.namespace".to_owned(),
            NAMESPACES[n].to_owned()
        )),
        (0..2usize).prop_map(|t| (
            "io.cilium.k8s.namespace.labels.team".to_owned(),
            ["red", "blue"][t].to_owned()
        )),
        (0..4usize).prop_map(|t| {
            let (k, v) = [
                ("pod-template-hash", "h1"),
                ("job-name", "nightly"),
                ("io.cilium.k8s.policy.serviceaccount", "spoofed"),
                ("kubernetes.io/role", "x"),
            ][t];
            (k.to_owned(), v.to_owned())
        }),
    ];
    let expr = (0..APPS.len(), any::<bool>()).prop_map(|(a, not)| Requirement {
        loc: Loc::default(),
        key: sp(LabelKey::parse("app")),
        operator: sp(if not { Operator::NotIn } else { Operator::In }),
        values: vec![sp(APPS[a].to_owned())],
    });
    (vec(pair, 0..2), vec(expr, 0..2)).prop_map(|(pairs, exprs)| {
        let mut seen = std::collections::BTreeSet::new();
        Selector {
            loc: Loc::default(),
            match_labels: pairs
                .into_iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .map(|(k, v)| (sp(LabelKey::parse(&k)), sp(v)))
                .collect(),
            match_expressions: exprs,
        }
    })
}

pub fn cidr(s: &str) -> Spanned<Cidr> {
    sp(Cidr::parse(s).expect("constant cidr"))
}

pub fn port_rules() -> impl Strategy<Value = Option<Vec<PortRule>>> {
    let port = prop_oneof![
        Just(Port::Number(80)),
        Just(Port::Number(81)),
        Just(Port::Number(53)),
        Just(Port::Number(0)),
        Just(Port::Named("http".into())),
        Just(Port::Named("dns".into())),
        Just(Port::Number(8000)),
    ];
    let pp = (
        port,
        option::of(prop::sample::select(vec![
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Any,
        ])),
        any::<bool>(),
    )
        .prop_map(|(p, proto, range)| PortProtocol {
            loc: Loc::default(),
            end_port: (range && p == Port::Number(8000)).then(|| sp(8100)),
            port: Some(sp(p)),
            protocol: proto.map(sp),
        });
    option::of(vec(
        vec(pp, 1..3).prop_map(|ports| PortRule {
            loc: Loc::default(),
            ports: Some(ports),
            ..PortRule::default()
        }),
        1..3,
    ))
}

pub fn peer_rule(egress: bool) -> impl Strategy<Value = PeerRule> {
    let kind = 0..7u8;
    (
        kind,
        vec(label_selector(), 1..3),
        0..CIDRS.len(),
        vec(0..5usize, 1..3),
        port_rules(),
        any::<bool>(),
        option::of(label_selector()),
    )
        .prop_map(move |(kind, sels, c, ents, ports, icmp, req)| {
            let mut r = PeerRule {
                loc: Loc::default(),
                to_ports: ports,
                ..PeerRule::default()
            };
            match kind {
                0 | 1 => r.endpoints = Some(sels),
                2 => {
                    let (cc, ex) = CIDRS[c];
                    r.cidr_set = Some(vec![CidrRule {
                        loc: Loc::default(),
                        cidr: Some(cidr(cc)),
                        except: ex.iter().map(|e| cidr(e)).collect(),
                        ..CidrRule::default()
                    }]);
                }
                3 => {
                    let all = [
                        Entity::World,
                        Entity::Cluster,
                        Entity::Host,
                        Entity::RemoteNode,
                        Entity::All,
                    ];
                    r.entities = Some(ents.into_iter().map(|e| sp(all[e])).collect());
                }
                4 => {
                    r.nodes = Some(vec![Selector {
                        loc: Loc::default(),
                        match_labels: vec![(sp(LabelKey::parse("zone")), sp("z0".into()))],
                        match_expressions: vec![],
                    }])
                }
                5 => {} // L4-only (or `{}` without ports)
                _ => {
                    r.cidr = Some(vec![cidr(CIDRS[c].0)]);
                }
            }
            if icmp && r.to_ports.is_none() {
                r.icmps = Some(vec![IcmpRule {
                    loc: Loc::default(),
                    fields: vec![IcmpField {
                        loc: Loc::default(),
                        family: None,
                        icmp_type: sp(IcmpType::Number(8)),
                    }],
                }]);
            }
            if kind == 1 {
                r.requires = req.map(|s| vec![s]);
            }
            let _ = egress;
            r
        })
}

pub fn cilium_rule() -> impl Strategy<Value = Rule> {
    (
        label_selector(),
        option::of(vec(peer_rule(false), 0..3)),
        option::of(vec(peer_rule(false), 0..2)),
        option::of(vec(peer_rule(true), 0..3)),
        option::of(vec(peer_rule(true), 0..2)),
        option::of((option::of(any::<bool>()), option::of(any::<bool>()))),
    )
        .prop_map(|(sel, i, id, e, ed, dd)| Rule {
            loc: Loc::default(),
            endpoint_selector: Some(sel),
            node_selector: None,
            ingress: i,
            ingress_deny: id,
            egress: e,
            egress_deny: ed,
            labels: None,
            description: None,
            enable_default_deny: dd.map(|(ingress, egress)| DefaultDeny { ingress, egress }),
            log: None,
        })
}

pub fn knp_rule() -> impl Strategy<Value = KnpRule> {
    let peer =
        (0..3u8, label_selector(), label_selector(), 0..CIDRS.len()).prop_map(|(k, a, b, c)| {
            let strip = |mut s: Selector| {
                // KNP keys have no source prefix and no Cilium-derived keys.
                s.match_labels
                    .retain(|(k, _)| k.value.source.is_none() && !k.value.key.starts_with("io."));
                s
            };
            match k {
                0 => KnpPeer {
                    loc: Loc::default(),
                    pod_selector: Some(strip(a)),
                    ..KnpPeer::default()
                },
                1 => KnpPeer {
                    loc: Loc::default(),
                    namespace_selector: Some(Selector {
                        loc: Loc::default(),
                        match_labels: vec![(sp(LabelKey::parse("team")), sp("red".into()))],
                        match_expressions: vec![],
                    }),
                    pod_selector: Some(strip(b)),
                    ..KnpPeer::default()
                },
                _ => KnpPeer {
                    loc: Loc::default(),
                    ip_block: Some(IpBlock {
                        loc: Loc::default(),
                        cidr: cidr(CIDRS[c].0),
                        except: CIDRS[c].1.iter().map(|e| cidr(e)).collect(),
                    }),
                    ..KnpPeer::default()
                },
            }
        });
    let port = (
        option::of(prop::sample::select(vec![Protocol::Tcp, Protocol::Udp])),
        option::of(prop_oneof![
            Just(Port::Number(80)),
            Just(Port::Number(53)),
            Just(Port::Named("http".into())),
        ]),
    )
        .prop_map(|(protocol, port)| KnpPort {
            loc: Loc::default(),
            protocol: protocol.map(sp),
            port: port.map(sp),
            end_port: None,
        });
    (option::of(vec(peer, 0..3)), option::of(vec(port, 0..2))).prop_map(|(peers, ports)| KnpRule {
        loc: Loc::default(),
        peers,
        ports,
    })
}

pub fn policy() -> impl Strategy<Value = Policy> {
    let body = prop_oneof![
        3 => cilium_rule().prop_map(|r| (0u8, PolicyBody::Cilium(CiliumSpec { spec: Some(r), specs: None }))),
        1 => cilium_rule().prop_map(|r| (1u8, PolicyBody::Cilium(CiliumSpec { spec: Some(r), specs: None }))),
        2 => (label_selector(), option::of(vec(knp_rule(), 0..3)), option::of(vec(knp_rule(), 0..3)), option::of(vec(prop::sample::select(vec![PolicyType::Ingress, PolicyType::Egress]).prop_map(sp), 0..3)))
            .prop_map(|(mut sel, ingress, egress, policy_types)| {
                sel.match_labels.retain(|(k, _)| k.value.source.is_none() && !k.value.key.starts_with("io."));
                (2u8, PolicyBody::Kubernetes(KnpSpec { loc: Loc::default(), pod_selector: sel, ingress, egress, policy_types }))
            }),
    ];
    (0..NAMESPACES.len(), body, 0..1000u32).prop_map(|(ns, (kind, body), n)| {
        let kind = match kind {
            0 => PolicyKind::CiliumNetworkPolicy,
            1 => PolicyKind::CiliumClusterwideNetworkPolicy,
            _ => PolicyKind::NetworkPolicy,
        };
        Policy {
            kind,
            name: sp(format!("p{n}")),
            namespace: kind.is_namespaced().then(|| sp(NAMESPACES[ns].to_owned())),
            labels: BTreeMap::new(),
            // A quarter of the policies in audit mode.
            annotations: if n % 4 == 0 {
                BTreeMap::from([(
                    compiler::model::MODE_ANNOTATION.to_owned(),
                    "audit".to_owned(),
                )])
            } else {
                BTreeMap::new()
            },
            file: Default::default(),
            loc: Loc::default(),
            body,
        }
    })
}

/// A flow endpoint: a pod (most often), a world or node address, or an entity.
pub fn peer_ref(names: &[String], pick: usize, kind: u8) -> PeerRef {
    match kind {
        0..=5 => PeerRef::Pod(names[pick % names.len()].clone()),
        6 => PeerRef::Ip(
            WORLD_IPS[pick % WORLD_IPS.len()]
                .parse::<IpAddr>()
                .expect("ip"),
        ),
        7 => PeerRef::Ip(
            NODE_IPS[pick % NODE_IPS.len()]
                .parse::<IpAddr>()
                .expect("ip"),
        ),
        8 => PeerRef::Entity("world".into()),
        _ => PeerRef::Entity("host".into()),
    }
}
