//! Property test of `diff`: for random policy sets A and B over a random
//! inventory, the changes `diff` reports are exactly the (source,
//! destination, protocol, port) whose `simulate` verdict differs between
//! A and B, checked pair by pair and port by port; and a set compared
//! with itself has no change.

use compiler::compile::{compile, Compiled, Config};
use policy_lang::ir::PolicySet;
use policy_lang::source::SourceMap;
use proptest::collection::vec;
use proptest::prelude::*;
use simulator::diff::{diff, Diff, Kind, State};
use simulator::eval::simulate;
use simulator::flow::{Flow, PeerRef, Verdict};
use simulator::testgen::{inventory, pod_strategy, policy};

/// Ports around the generator's rule ports, their range ends and beyond.
const PORTS: [u16; 10] = [0, 52, 53, 80, 81, 8049, 8050, 8080, 9090, 65535];
const WORLD: [&str; 3] = ["203.0.113.7", "10.0.0.200", "192.0.2.1"];

fn flow(from: PeerRef, to: PeerRef, protocol: u8, port: u16) -> Flow {
    Flow::new(from, to, port, protocol)
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "TCP",
        17 => "UDP",
        _ => "ICMP",
    }
}

/// The change `d` reports for a flow between pods, if any.
fn reported(d: &Diff, from: &str, to: &str, protocol: u8, port: u16) -> Option<Kind> {
    d.deltas
        .iter()
        .find(|x| {
            d.groups[x.from].members.iter().any(|m| m == from)
                && d.groups[x.to].members.iter().any(|m| m == to)
                && x.ports.iter().any(|p| {
                    p.protocol == proto_name(protocol)
                        && p.ranges.iter().any(|&(a, b)| a <= port && port <= b)
                })
        })
        .map(|x| x.kind)
}

fn verdict(c: &Compiled, f: &Flow) -> Verdict {
    simulate(c, f).expect("peers exist").verdict
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn diff_is_exactly_the_flows_whose_verdict_changes(
        pods in vec(pod_strategy(), 2..7),
        ns_team in vec(0..2usize, 3),
        a in vec(policy(), 0..4),
        b in vec(policy(), 0..4),
        keep in 0..4usize,
    ) {
        let inv = inventory(pods, ns_team);
        // B often shares policies with A, as an edit does.
        let mut b = b;
        b.extend(a.iter().take(keep).cloned());
        let sources = SourceMap::new();
        let cfg = Config::default();
        let (ca, _) = compile(&PolicySet { policies: a }, &sources, &inv, &cfg);
        let (cb, _) = compile(&PolicySet { policies: b }, &sources, &inv, &cfg);
        let same = diff(State { compiled: &ca }, State { compiled: &ca });
        prop_assert!(same.is_empty(), "a set compared with itself changes");
        let d = diff(State { compiled: &ca }, State { compiled: &cb });
        let names: Vec<String> = inv.pods.iter().map(|p| p.qualified_name()).collect();
        for x in &names {
            for y in &names {
                if x == y {
                    continue;
                }
                for (protocol, ports) in [(6u8, &PORTS[..]), (17, &PORTS[..]), (1, &[0u16, 8][..])] {
                    for &port in ports {
                        let f = flow(PeerRef::Pod(x.clone()), PeerRef::Pod(y.clone()), protocol, port);
                        let (va, vb) = (verdict(&ca, &f), verdict(&cb, &f));
                        let want = match (va, vb) {
                            (Verdict::Denied, Verdict::Allowed) => Some(Kind::Opened),
                            (Verdict::Allowed, Verdict::Denied) => Some(Kind::Closed),
                            _ => None,
                        };
                        let got = reported(&d, x, y, protocol, port).filter(|k| *k != Kind::L7);
                        prop_assert_eq!(got, want, "{} → {} {}/{}", x, y, port, protocol);
                    }
                }
            }
        }
        // Every reported change holds for each pair of its groups, at the
        // first port of each range.
        for x in &d.deltas {
            for from in &d.groups[x.from].members {
                for to in &d.groups[x.to].members {
                    if from == to {
                        continue;
                    }
                    let peer = |m: &String| match m.parse() {
                        Ok(ip) => PeerRef::Ip(ip),
                        Err(_) => PeerRef::Pod(m.clone()),
                    };
                    for p in &x.ports {
                        let protocol = match p.protocol { "TCP" => 6, "UDP" => 17, "SCTP" => 132, _ => 1 };
                        for &(lo, _) in &p.ranges {
                            let f = flow(peer(from), peer(to), protocol, lo);
                            let (va, vb) = (verdict(&ca, &f), verdict(&cb, &f));
                            match x.kind {
                                Kind::Opened => prop_assert!(va == Verdict::Denied && vb == Verdict::Allowed, "{} → {} {}: {:?} {:?}; reported {:?} / {:?}", from, to, lo, va, vb, x.base.reason, x.head.reason),
                                Kind::Closed => prop_assert!(va == Verdict::Allowed && vb == Verdict::Denied, "{} → {} {}: {:?} {:?}; reported {:?} / {:?}", from, to, lo, va, vb, x.base.reason, x.head.reason),
                                Kind::L7 => prop_assert!(va == Verdict::Allowed && vb == Verdict::Allowed),
                            }
                        }
                    }
                }
            }
        }
        // Outside addresses: a changed verdict is reported for a range of
        // the address's identity on both sides.
        for w in WORLD {
            let ip: std::net::IpAddr = w.parse().expect("ip");
            for y in &names {
                for &port in &PORTS {
                    for (from, to) in [(PeerRef::Ip(ip), PeerRef::Pod(y.clone())), (PeerRef::Pod(y.clone()), PeerRef::Ip(ip))] {
                        let f = flow(from.clone(), to.clone(), 6, port);
                        if verdict(&ca, &f) == verdict(&cb, &f) {
                            continue;
                        }
                        // An address that is a pod's (a host-network pod
                        // has its node's) is that pod.
                        let pod_of_ip = [&ca, &cb].iter().find_map(|c| {
                            c.endpoint_by_ip(ip).filter(|e| !e.host).map(|e| e.name.clone())
                        });
                        if let Some(p) = pod_of_ip {
                            let (f, t) = match &from {
                                PeerRef::Ip(_) => (p, y.clone()),
                                _ => (y.clone(), p),
                            };
                            if f != t {
                                prop_assert!(reported(&d, &f, &t, 6, port).is_some(), "{} → {} {}/TCP", f, t, port);
                            }
                            continue;
                        }
                        let same_range = |m: &String| {
                            m.parse::<std::net::IpAddr>().is_ok_and(|a| {
                                [&ca, &cb].iter().all(|c| c.identity_of_ip(a, None) == c.identity_of_ip(ip, None))
                            })
                        };
                        let hit = d.deltas.iter().any(|x| {
                            let (gf, gt) = (&d.groups[x.from], &d.groups[x.to]);
                            let ends = match &from {
                                PeerRef::Ip(_) => gf.members.iter().any(same_range) && gt.members.contains(y),
                                _ => gf.members.contains(y) && gt.members.iter().any(same_range),
                            };
                            ends && x.ports.iter().any(|p| p.protocol == "TCP" && p.ranges.iter().any(|&(a, b)| a <= port && port <= b))
                        });
                        prop_assert!(hit, "{} → {} {}/TCP changes but is not reported", from, to, port);
                    }
                }
            }
        }
    }
}
