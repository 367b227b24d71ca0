//! Differential test: the loaded eBPF program, run on crafted packets with
//! BPF_PROG_TEST_RUN, gives the simulator's verdict for every flow, each
//! direction checked on its own. 100 random cases (policies + inventory)
//! × 100 flows = 10,000 flows, from a fixed seed (override: SLUICE_SEED),
//! once over IPv4 and once over IPv6 (the pods dual-stack).
//! Each case's state is applied over a random earlier one, as updates are.
//!
//! Needs root and BPF. Without them the test says so and passes, unless
//! SLUICE_REQUIRE_BPF=1 (as .ci/run sets), when it fails.

use agent::datapath::{Datapath, FROM_ENDPOINT, TO_ENDPOINT};
use agent::packet;
use compiler::compile::{compile, Compiled, Config};
use policy_lang::ir::PolicySet;
use policy_lang::source::SourceMap;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use simulator::eval::{judge, resolve, Resolved, Side};
use simulator::flow::{PeerRef, Verdict};
use simulator::testgen::{inventory, pod_strategy, policy, WORLD_IPS};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Outside addresses for IPv6 flows.
const WORLD_IPS6: &[&str] = &[
    "2001:4860::8888",
    "2606:4700::1111",
    "fd00::9",
    "2001:db8:ffff::7",
];

/// The IPv6 address a test pod gets beside its IPv4 one.
fn v6_of(a: Ipv4Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    )
}

fn bpf_or_skip() -> Option<Datapath> {
    match Datapath::load() {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1") {
                panic!("BPF is required (SLUICE_REQUIRE_BPF=1) but the datapath did not load: {e}");
            }
            eprintln!("SKIPPED: the eBPF datapath cannot be loaded here ({e}); set SLUICE_REQUIRE_BPF=1 to fail instead");
            None
        }
    }
}

/// The simulator's verdict for one direction of a flow, and whether a
/// policy in audit mode would have dropped it (an AUDIT verdict).
fn expected(
    c: &Compiled,
    src: &Side,
    dst: &Side,
    egress: bool,
    proto: u8,
    port: u16,
) -> (Verdict, bool) {
    // Hide the other side's endpoint so only this direction is judged; its
    // address still resolves to its identity through the ipcache.
    let strip = |s: &Side<'_>| -> Side<'static> {
        Side {
            endpoint: None,
            ip: s.ip,
            entity: s.entity,
            node: None,
        }
    };
    let f = if egress {
        Resolved {
            src: src.clone(),
            dst: strip(dst),
            protocol: proto,
            port,
        }
    } else {
        Resolved {
            src: strip(src),
            dst: dst.clone(),
            protocol: proto,
            port,
        }
    };
    let o = judge(c, &f);
    assert_eq!(o.steps.len(), 1, "exactly the one direction is judged");
    (o.verdict, o.steps[0].audit.is_some())
}

fn v4(ip: Option<IpAddr>) -> Ipv4Addr {
    match ip {
        Some(IpAddr::V4(a)) => a,
        other => panic!("test flows are IPv4, got {other:?}"),
    }
}

#[test]
fn kernel_verdicts_equal_simulator_verdicts() {
    differential(false);
}

#[test]
fn kernel_verdicts_equal_simulator_verdicts_over_ipv6() {
    differential(true);
}

fn differential(ipv6: bool) {
    // One datapath for all cases: each case's states are applied over the
    // previous case's, as a long-running agent's are. (Loading costs ~1 s
    // of verifier time; conntrack entries of earlier cases cannot pass a
    // flow here: source ports never equal the destination ports used, so
    // no flow looks like the reply of another, and every update makes
    // tracked connections be judged again.)
    let Some(dp) = bpf_or_skip() else {
        return;
    };
    let dp = std::cell::RefCell::new(dp);
    let seed: u64 = std::env::var("SLUICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261125);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        PtConfig {
            cases: 100,
            failure_persistence: None,
            ..PtConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = (
        vec(pod_strategy(), 2..9),
        vec(0..2usize, 3),
        vec(policy(), 1..5),
        vec(
            (0..64usize, 0..8u8, 0..64usize, 0..8u8, 0..7usize, 0..4u8),
            100,
        ),
        vec(policy(), 0..4),
    );
    let checked = std::cell::Cell::new(0usize);
    let denied = std::cell::Cell::new(0usize);
    let audited = std::cell::Cell::new(0usize);
    let result = runner.run(&strategy, |(pods, ns_team, policies, flows, previous)| {
        let mut inv = inventory(pods, ns_team);
        if ipv6 {
            for p in &mut inv.pods {
                let v4 = v4(p.ips.first().copied());
                p.ips.push(IpAddr::V6(v6_of(v4)));
            }
        }
        let set = PolicySet { policies };
        let (c, _) = compile(&set, &SourceMap::new(), &inv, &Config::default());
        let mut dp = dp.borrow_mut();
        let keys: HashMap<String, u32> = c
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i as u32 + 1))
            .collect();
        // The state under test is applied over another one (other
        // policies, same pods), as an update is: what the first wrote must
        // not leak into the verdicts of the second.
        let (before, _) = compile(
            &PolicySet { policies: previous },
            &SourceMap::new(),
            &inv,
            &Config::default(),
        );
        dp.apply(&before, &keys, None, true)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        dp.apply(&c, &keys, None, true)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let names: Vec<&str> = c.endpoints.iter().map(|e| e.name.as_str()).collect();
        // AUDIT is reported once per connection: an ICMP flow between the
        // same pair again is a tracked one (no port tells them apart).
        let mut seen_icmp = std::collections::HashSet::new();
        for (i, (a, ak, b, bk, port, proto)) in flows.into_iter().enumerate() {
            // Pods mostly, world addresses sometimes; never a pod to itself.
            let peer = |x: usize, k: u8| {
                if k < 6 {
                    PeerRef::Pod(names[x % names.len()].to_owned())
                } else if ipv6 {
                    PeerRef::Ip(WORLD_IPS6[x % WORLD_IPS6.len()].parse().expect("ip"))
                } else {
                    PeerRef::Ip(WORLD_IPS[x % WORLD_IPS.len()].parse().expect("ip"))
                }
            };
            let (from, to) = (peer(a, ak), peer(b, bk));
            if from == to {
                continue;
            }
            let (protocol, port) = match proto {
                0 => (6, [80, 81, 53, 8080, 8050, 9090, 0][port]),
                1 => (17, [80, 81, 53, 8080, 8050, 9090, 0][port]),
                2 => (132, [80, 81, 53, 8080, 8050, 9090, 0][port]),
                _ if ipv6 => (58, 128),
                _ => (1, 8),
            };
            let mut src = resolve(&c, &from).map_err(TestCaseError::fail)?;
            let mut dst = resolve(&c, &to).map_err(TestCaseError::fail)?;
            let sport = 20000 + i as u16;
            let pkt = if ipv6 {
                // A pod's IPv6 address; world peers have one already.
                for side in [&mut src, &mut dst] {
                    if let Some(ep) = side.endpoint {
                        side.ip = ep.ips.iter().copied().find(IpAddr::is_ipv6);
                    }
                }
                let v6 = |ip: Option<IpAddr>| match ip {
                    Some(IpAddr::V6(a)) => a,
                    other => panic!("IPv6 flows need IPv6 addresses, got {other:?}"),
                };
                packet::ipv6(v6(src.ip), v6(dst.ip), protocol, sport, port)
            } else {
                packet::ipv4(v4(src.ip), v4(dst.ip), protocol, sport, port)
            };
            for (egress, side, prog) in [(true, &src, FROM_ENDPOINT), (false, &dst, TO_ENDPOINT)] {
                let Some(ep) = side.endpoint else { continue };
                let mark = keys[&ep.name];
                let _ = dp.drain_events();
                let (ret, _) = dp
                    .test_run(prog, &pkt, mark, 1)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let kernel = if ret == 0 {
                    Verdict::Allowed
                } else {
                    Verdict::Denied
                };
                let kernel_audit = dp
                    .drain_events()
                    .iter()
                    .any(|e| e.verdict == agent::maps::VERDICT_AUDIT);
                let (sim, sim_audit) = expected(&c, &src, &dst, egress, protocol, port);
                let first = !matches!(protocol, 1 | 58)
                    || seen_icmp.insert((ep.name.clone(), src.ip, dst.ip, egress));
                prop_assert_eq!(
                    kernel_audit,
                    sim_audit && first,
                    "{} → {} {}/{} at {} ({}): AUDIT verdict differs",
                    from,
                    to,
                    port,
                    protocol,
                    ep.name,
                    if egress { "egress" } else { "ingress" }
                );
                audited.set(audited.get() + usize::from(kernel_audit));
                prop_assert_eq!(
                    kernel,
                    sim,
                    "{} → {} {}/{} at {} ({}): kernel returned {}",
                    from,
                    to,
                    port,
                    protocol,
                    ep.name,
                    if egress { "egress" } else { "ingress" },
                    ret
                );
                checked.set(checked.get() + 1);
                denied.set(denied.get() + usize::from(kernel == Verdict::Denied));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!(
            "kernel and simulator disagree over {} (seed {seed}): {e}",
            if ipv6 { "IPv6" } else { "IPv4" }
        );
    }
    let checked = checked.get();
    let denied = denied.get();
    let audited = audited.get();
    eprintln!(
        "{checked} direction verdicts compared ({denied} denied, {audited} audit), all equal"
    );
    assert!(checked >= 10_000, "only {checked} verdicts compared");
    // A quarter of the generated policies are in audit mode.
    assert!(
        audited >= checked / 100,
        "only {audited} AUDIT verdicts of {checked}"
    );
    // Both verdicts are well represented, or agreeing would prove little.
    assert!(
        denied >= checked / 10 && checked - denied >= checked / 10,
        "{denied} of {checked} denied"
    );
}
