//! The symbolic verdict, evaluated on concrete pods, is `simulate`'s: for
//! random policy sets over random inventories, every (pod pair, protocol,
//! port) is judged both ways. Reproducible: the seed is fixed, and
//! SLUICE_SEED=<n> picks another.

use compiler::compile::{compile, Config};
use compiler::model::normalize;
use policy_lang::ir::PolicySet;
use policy_lang::source::SourceMap;
use proptest::collection::vec;
use proptest::test_runner::{Config as RunnerConfig, RngSeed, TestCaseError, TestRunner};
use simulator::eval::simulate;
use simulator::flow::{Flow, PeerRef, Verdict};
use simulator::testgen::{inventory, pod_strategy, policy};
use std::sync::atomic::{AtomicUsize, Ordering};
use verifier::{Bool, Encoder};
use z3::ast::{Int, BV};
use z3::{SatResult, Solver};

/// A runner from SLUICE_SEED, else the test's own fixed seed.
fn runner(default_seed: u64, cases: u32) -> (u64, TestRunner) {
    let seed = std::env::var("SLUICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    let runner = TestRunner::new(RunnerConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    (seed, runner)
}

const PORTS: [u16; 9] = [0, 53, 80, 81, 8080, 8081, 9090, 5432, 65535];

#[test]
fn the_formula_on_concrete_pods_is_what_simulate_says() {
    let (seed, mut runner) = runner(0x5_1u64, 120);
    let cases = AtomicUsize::new(0);
    let strategy = (
        vec(pod_strategy(), 2..6),
        vec(0..2usize, 3),
        vec(policy(), 0..5),
    );
    let result = runner.run(&strategy, |(pods, ns_team, policies)| {
        let inv = inventory(pods, ns_team);
        let set = PolicySet { policies };
        let sources = SourceMap::new();
        let cfg = Config::default();
        let (compiled, _) = compile(&set, &sources, &inv, &cfg);
        let model = normalize(&set, &sources, &inv.services, &cfg.model);
        let enc = Encoder::new(&model, &inv, &cfg);
        let solver = Solver::new();
        let f = enc.flow(&solver);
        let allowed = enc.allowed(&f);
        for x in &inv.pods {
            for y in &inv.pods {
                if x.name == y.name {
                    continue;
                }
                for (proto, ports) in [
                    (6u8, &PORTS[..]),
                    (17, &PORTS[..]),
                    (132, &[80u16][..]),
                    (1, &[0u16, 8][..]),
                ] {
                    for &port in ports {
                        let flow = Flow::new(
                            PeerRef::Pod(x.qualified_name()),
                            PeerRef::Pod(y.qualified_name()),
                            port,
                            proto,
                        );
                        let want = simulate(&compiled, &flow)
                            .map_err(TestCaseError::fail)?
                            .verdict;
                        solver.push();
                        solver.assert(enc.concrete(&f.src, x));
                        solver.assert(enc.concrete(&f.dst, y));
                        solver.assert(f.port.eq(BV::from_u64(u64::from(port), 16)));
                        solver.assert(f.proto.eq(Int::from_i64(i64::from(proto))));
                        let sat = solver.check();
                        let got = solver
                            .get_model()
                            .and_then(|m| m.eval(&allowed, true))
                            .and_then(|b| b.as_bool());
                        solver.pop(1);
                        if sat != SatResult::Sat {
                            return Err(TestCaseError::fail(format!(
                                "{} and {} do not satisfy the constraints of real pods",
                                x.qualified_name(),
                                y.qualified_name()
                            )));
                        }
                        let got = match got {
                            Some(true) => Verdict::Allowed,
                            Some(false) => Verdict::Denied,
                            None => return Err(TestCaseError::fail("no value")),
                        };
                        if got != want {
                            return Err(TestCaseError::fail(format!(
                                "{} → {} {port}/{proto}: formula {got}, simulate {want}",
                                x.qualified_name(),
                                y.qualified_name()
                            )));
                        }
                        cases.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
    let n = cases.load(Ordering::Relaxed);
    assert!(n >= 10_000, "only {n} cases were checked");
    eprintln!("{n} (policy set, pod pair, protocol, port) cases agree");
}

/// Addresses outside the cluster the generated policies tell apart (and
/// IPv6 ones they never name), and reserved identities.
const ADDRESSES: &[&str] = &[
    "8.8.8.8",
    "8.8.9.1",
    "10.200.0.5",
    "10.200.1.7",
    "10.200.1.200",
    "10.1.2.3",
    "172.16.0.9",
    "203.0.113.7",
    "2001:db8::1",
];
const ENTITIES: &[&str] = &[
    "host",
    "remote-node",
    "kube-apiserver",
    "health",
    "init",
    "unmanaged",
    "ingress",
];

#[test]
fn the_formula_for_addresses_and_entities_is_what_simulate_says() {
    let (seed, mut runner) = runner(0xed6e_u64, 100);
    let cases = AtomicUsize::new(0);
    let strategy = (
        vec(pod_strategy(), 1..4),
        vec(0..2usize, 3),
        vec(policy(), 0..5),
        proptest::bool::ANY,
        proptest::bool::ANY,
    );
    let result = runner.run(&strategy, |(pods, ns_team, policies, dual_stack, node_labels)| {
        let inv = inventory(pods, ns_team);
        let set = PolicySet {
            policies: policies.into_iter().map(host_policy).collect(),
        };
        let sources = SourceMap::new();
        let cfg = Config {
            dual_stack,
            node_selector_labels: node_labels,
            ..Config::default()
        };
        let (compiled, _) = compile(&set, &sources, &inv, &cfg);
        let model = normalize(&set, &sources, &inv.services, &cfg.model);
        let enc = Encoder::new(&model, &inv, &cfg);
        let solver = Solver::new();
        let pod = enc.pod("pod", &solver);
        let mut others: Vec<(PeerRef, verifier::Other, Bool)> = Vec::new();
        for text in ADDRESSES {
            let ip: std::net::IpAddr = text.parse().map_err(|_| TestCaseError::fail("ip"))?;
            let a = enc.addr(ip.is_ipv4());
            let is = enc.addr_eq(&a, ip);
            others.push((PeerRef::Ip(ip), verifier::Other::Addr(a), is));
        }
        for e in ENTITIES {
            let id = compiler::identity::RESERVED
                .iter()
                .find(|(_, n)| n == e)
                .map(|(id, _)| *id)
                .ok_or_else(|| TestCaseError::fail("entity"))?;
            others.push((
                PeerRef::Entity((*e).to_owned()),
                verifier::Other::Reserved(id),
                Bool::from_bool(true),
            ));
        }
        for (i, n) in inv.nodes.iter().enumerate() {
            others.push((
                PeerRef::Ip(n.ips[0]),
                verifier::Other::Node(i),
                Bool::from_bool(true),
            ));
        }
        for x in &inv.pods {
            for (peer, other, is) in &others {
                for pod_is_src in [true, false] {
                    let e = enc.edge(&pod, other.clone(), pod_is_src);
                    let allowed = enc.allowed_edge(&e);
                    for (proto, ports) in [(6u8, &PORTS[..]), (17, &[53u16, 80][..]), (1, &[8u16][..])]
                    {
                        for &port in ports {
                            let me = PeerRef::Pod(x.qualified_name());
                            let (from, to) = if pod_is_src {
                                (me, peer.clone())
                            } else {
                                (peer.clone(), me)
                            };
                            let flow = Flow::new(from, to, port, proto);
                            let want = simulate(&compiled, &flow)
                                .map_err(TestCaseError::fail)?
                                .verdict;
                            solver.push();
                            solver.assert(enc.concrete(&pod, x));
                            solver.assert(is);
                            solver.assert(e.port.eq(BV::from_u64(u64::from(port), 16)));
                            solver.assert(e.proto.eq(Int::from_i64(i64::from(proto))));
                            let sat = solver.check();
                            let got = solver
                                .get_model()
                                .and_then(|m| m.eval(&allowed, true))
                                .and_then(|b| b.as_bool());
                            solver.pop(1);
                            if sat != SatResult::Sat {
                                return Err(TestCaseError::fail(format!(
                                    "{} with {peer:?} does not satisfy the constraints",
                                    x.qualified_name()
                                )));
                            }
                            let got = match got {
                                Some(true) => Verdict::Allowed,
                                Some(false) => Verdict::Denied,
                                None => return Err(TestCaseError::fail("no value")),
                            };
                            if got != want {
                                return Err(TestCaseError::fail(format!(
                                    "{flow:?} (dual stack {dual_stack}, node labels {node_labels}): formula {got}, simulate {want}\n{}",
                                    policy_lang::render::render_set(&set)
                                )));
                            }
                            cases.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
    let n = cases.load(Ordering::Relaxed);
    assert!(n >= 10_000, "only {n} cases were checked");
    eprintln!("{n} (policy set, pod, address or entity, protocol, port) cases agree");
}

/// Every other clusterwide policy becomes a host policy: the same rules
/// for the nodes of a zone (or every node) instead of for pods.
fn host_policy(mut p: policy_lang::ir::Policy) -> policy_lang::ir::Policy {
    use policy_lang::ir::{LabelKey, PolicyBody, PolicyKind, Selector};
    use simulator::testgen::sp;
    if p.kind != PolicyKind::CiliumClusterwideNetworkPolicy || p.name.value.len().is_multiple_of(2)
    {
        return p;
    }
    if let PolicyBody::Cilium(c) = &mut p.body {
        if let Some(r) = c.spec.as_mut() {
            let zone = p.name.value.len() % 3;
            r.endpoint_selector = None;
            r.node_selector = Some(Selector {
                loc: Default::default(),
                match_labels: if zone == 2 {
                    vec![]
                } else {
                    vec![(sp(LabelKey::parse("zone")), sp(format!("z{zone}")))]
                },
                match_expressions: vec![],
            });
        }
    }
    p
}
