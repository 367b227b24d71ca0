//! Per-packet cost of the datapath with BPF_PROG_TEST_RUN (issue: ≤ 80 ns
//! and flat from 10 to 100,000 entries). Needs root.
//!
//! For N = 10, 1,000, 100,000: N endpoint addresses in the ipcache (IPv4,
//! and for the per-packet figures IPv6 too) and N entries in one endpoint's
//! policy map; the "hit" packet comes from one of
//! those addresses to an allowed port (ipcache hit, L3 entry found), the
//! "miss" packet from an unknown address (world: both lookups miss, drop).
//! Each figure is the kernel's average over 1,000,000 runs; the no-op
//! classifier on the same packet is the floor. Nothing reads the event
//! rings during those runs, so after the first 8,192 drops on a CPU their
//! events are refused by the full ring; "missev" is the drop path with
//! every event delivered (runs of 8,000, the rings drained between them).

use agent::datapath::{Datapath, NOOP, TO_ENDPOINT};
use agent::packet;
use compiler::compile::{Compiled, Endpoint, IpcacheEntry};
use compiler::mapstate::{Entry, Key, PolicyMap};
use policy_lang::ir::Cidr;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv6 address of the i-th peer.
fn v6_of(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i) + 1)
}

/// N peers and N policy entries; with `dual`, each peer has an IPv6
/// address in the ipcache too.
fn state(n: u32, dual: bool) -> Compiled {
    let mut c = Compiled::default();
    let mut m = PolicyMap::default();
    for i in 0..n {
        let addr = Ipv4Addr::from(0x0a00_0000 + i + 1);
        let cidr = Cidr {
            addr: IpAddr::V4(addr),
            prefix_len: 32,
            bare: false,
        };
        c.ipcache.push(IpcacheEntry {
            prefix: cidr.to_string(),
            cidr,
            identity: 1000 + i,
            node: None,
        });
        if dual {
            // The same peer's IPv6 address.
            let cidr6 = Cidr {
                addr: IpAddr::V6(v6_of(i)),
                prefix_len: 128,
                bare: false,
            };
            c.ipcache.push(IpcacheEntry {
                prefix: cidr6.to_string(),
                cidr: cidr6,
                identity: 1000 + i,
                node: None,
            });
        }
        m.insert(
            Key::new(1000 + i, false, 6, 80, 24),
            Entry::allow(false, false, 0),
        );
    }
    c.maps.push(m);
    c.endpoints.push(Endpoint {
        name: "bench/server".into(),
        identity: 999,
        node: None,
        ips: vec![],
        map: 0,
        enforced: [true, true],
        host: false,
        selected_by: vec![],
        audit_map: None,
        audit_by: Vec::new(),
    });
    c
}

fn main() {
    let server = Ipv4Addr::new(10, 200, 0, 1);
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "entries",
        "noop ns",
        "hit ns",
        "miss ns",
        "missev ns",
        "hit6 ns",
        "miss6 ns",
        "noop1 ns",
        "new ns",
        "newdrop ns",
        "apply ms",
        "update ms"
    );
    for n in [10u32, 1_000, 10_000, 100_000] {
        let mut dp = match Datapath::load() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cannot load the datapath (root and BPF needed): {e}");
                std::process::exit(2);
            }
        };
        let keys = HashMap::from([("bench/server".to_owned(), 1u32)]);
        let st = state(n, false);
        let t = std::time::Instant::now();
        dp.apply(&st, &keys, None, true).expect("apply");
        let apply_ms = t.elapsed().as_secs_f64() * 1e3;
        // An update from an artifact file: a second state of the same size
        // (other identities, so every entry changes) written with
        // `compiler::artifact::encode`, then read, decoded and applied over
        // the first, stale entries deleted: what the agent does when its
        // --artifact file changes.
        let mut second = state(n, false);
        for e in &mut second.ipcache {
            e.identity += n;
        }
        for m in &mut second.maps {
            let shifted: Vec<_> = m
                .entries
                .iter()
                .map(|(k, v)| {
                    (
                        Key::new(k.identity + n, k.egress, k.proto, k.dport, k.plen),
                        v.clone(),
                    )
                })
                .collect();
            *m = PolicyMap::default();
            for (k, v) in shifted {
                m.insert(k, v);
            }
        }
        let file = std::env::temp_dir().join(format!("sluice-bench-{}.bin", std::process::id()));
        std::fs::write(&file, compiler::artifact::encode(&second)).expect("write artifact");
        let t = std::time::Instant::now();
        let bytes = std::fs::read(&file).expect("read artifact");
        let decoded = compiler::artifact::decode(&bytes).expect("decode");
        dp.apply(&decoded, &keys, None, true).expect("apply");
        let update_ms = t.elapsed().as_secs_f64() * 1e3;
        let _ = std::fs::remove_file(&file);
        // The first state again, with IPv6 addresses too, for the
        // per-packet figures.
        dp.apply(&state(n, true), &keys, None, true).expect("apply");
        let known = Ipv4Addr::from(0x0a00_0000 + n / 2 + 1);
        let hit = packet::ipv4(known, server, 6, 40000, 80);
        let miss = packet::ipv4(Ipv4Addr::new(192, 0, 2, 7), server, 6, 40001, 80);
        let (r, _) = dp.test_run(TO_ENDPOINT, &hit, 1, 1).expect("run");
        assert_eq!(r, 0, "the hit packet is allowed");
        let (r, _) = dp.test_run(TO_ENDPOINT, &miss, 1, 1).expect("run");
        assert_eq!(r, 2, "the miss packet is dropped");
        // The median of 7 runs of 1,000,000 repetitions each: the machine
        // is shared, single runs vary by ±20%.
        // Drops whose events all reach the reader: runs of 8,000 (a CPU's
        // ring holds 8,192 events), drained between runs.
        dp.drain_events();
        let lost = dp.events_lost();
        let mut with_events: Vec<u32> = (0..21)
            .map(|_| {
                let t = dp.test_run(TO_ENDPOINT, &miss, 1, 8_000).expect("run").1;
                assert_eq!(dp.drain_events().len(), 8_000, "every drop's event is read");
                t
            })
            .collect();
        assert_eq!(dp.events_lost(), lost, "no event lost");
        with_events.sort_unstable();
        let mi_ev = with_events[10];
        let median = |prog: &str, pkt: &[u8]| {
            let mut v: Vec<u32> = (0..7)
                .map(|_| dp.test_run(prog, pkt, 1, 1_000_000).expect("run").1)
                .collect();
            v.sort_unstable();
            v[3]
        };
        let noop = median(NOOP, &hit);
        let h = median(TO_ENDPOINT, &hit);
        let mi = median(TO_ENDPOINT, &miss);
        // The same over IPv6.
        let server6: Ipv6Addr = "2001:db8:1::1".parse().expect("v6");
        let hit6 = packet::ipv6(v6_of(n / 2), server6, 6, 40000, 80);
        let miss6 = packet::ipv6(
            "2001:db8:ffff::7".parse().expect("v6"),
            server6,
            6,
            40001,
            80,
        );
        let (r, _) = dp.test_run(TO_ENDPOINT, &hit6, 1, 1).expect("run");
        assert_eq!(r, 0, "the IPv6 hit packet is allowed");
        let (r, _) = dp.test_run(TO_ENDPOINT, &miss6, 1, 1).expect("run");
        assert_eq!(r, 2, "the IPv6 miss packet is dropped");
        let h6 = median(TO_ENDPOINT, &hit6);
        let mi6 = median(TO_ENDPOINT, &miss6);
        // First packets of new connections: each a different source port,
        // so each misses conntrack, is judged against the policy map and
        // inserts an entry and an event. One run per packet; the kernel's
        // per-run figure then includes the timer's own cost, so the no-op
        // is measured the same way.
        let first = |prog: &str, from: Ipv4Addr| {
            let total: u64 = (0..20_000u16)
                .map(|i| {
                    let p = packet::ipv4(from, server, 6, 1024 + i, 80);
                    u64::from(dp.test_run(prog, &p, 1, 1).expect("run").1)
                })
                .sum();
            total / 20_000
        };
        let noop1 = first(NOOP, known);
        let new = first(TO_ENDPOINT, known);
        // The same for flows that are denied: full lookups, drop, event.
        let new_drop = first(TO_ENDPOINT, Ipv4Addr::new(192, 0, 2, 8));
        println!("{n:>8} {noop:>10} {h:>10} {mi:>10} {mi_ev:>10} {h6:>10} {mi6:>10} {noop1:>10} {new:>10} {new_drop:>10} {apply_ms:>10.1} {update_ms:>10.1}");
    }
}
