//! Benchmarks of the semantic core (issue: compile 5,000 policies over
//! 20,000 pods in ≤ 2 s and ≤ 1 GiB; simulate ≥ 2,000,000 flows/s).
//!
//! `cargo bench -p simulator --bench core` prints a growth table (policies ×
//! pods), then the simulate rate. Inputs are generated YAML: `N` namespaces
//! of pods with 20 apps each (so pods / 10 identities), and policies that
//! select an app and allow two others (one cross-namespace) on ports, egress
//! to a database port and a CIDR, plus NetworkPolicies.
//! `SLUICE_BENCH_DIR=dir` also writes the largest input there.

use compiler::compile::{compile, Config};
use compiler::inventory;
use policy_lang::source::SourceMap;
use simulator::eval::simulate;
use simulator::flow::{Flow, PeerRef};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod gen;
use gen::{inventory_yaml, policies_yaml};

struct Run {
    policies: usize,
    pods: usize,
    identities: usize,
    entries: usize,
    parse_ms: f64,
    compile_ms: f64,
}

fn run(policies: usize, pods: usize) -> (Run, compiler::compile::Compiled) {
    let inv_text = inventory_yaml(pods);
    let namespaces = pods.div_ceil(200.min(pods));
    let pol_text = policies_yaml(policies, namespaces);
    if let Some(dir) = std::env::var_os("SLUICE_BENCH_DIR") {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("inventory.yaml"), &inv_text);
        let _ = std::fs::write(dir.join("policies.yaml"), &pol_text);
    }
    let t = Instant::now();
    let loaded = policy_lang::parse_source("policies.yaml", &pol_text, &Default::default());
    assert_eq!(loaded.error_count(), 0, "generated policies are valid");
    let mut sources = loaded.sources.clone();
    let mut diags = Vec::new();
    let inv = inventory::parse_str("inventory.yaml", &inv_text, &mut sources, &mut diags);
    assert!(diags.iter().all(|d| !d.is_error()));
    let parse_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let (c, cd) = compile(&loaded.set, &sources, &inv, &Config::default());
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(cd.iter().all(|d| !d.is_error()));
    let entries = c.maps.iter().map(|m| m.len()).sum();
    let _ = SourceMap::new();
    (
        Run {
            policies,
            pods,
            identities: c.identities.len(),
            entries,
            parse_ms,
            compile_ms,
        },
        c,
    )
}

fn main() {
    println!(
        "{:>9} {:>7} {:>11} {:>14} {:>10} {:>11}",
        "policies", "pods", "identities", "map entries", "parse ms", "compile ms"
    );
    let sizes = [
        (1_250, 20_000),
        (2_500, 20_000),
        (5_000, 5_000),
        (5_000, 10_000),
        (5_000, 20_000),
    ];
    let mut last = None;
    for (p, n) in sizes {
        let (r, c) = run(p, n);
        println!(
            "{:>9} {:>7} {:>11} {:>14} {:>10.0} {:>11.0}",
            r.policies, r.pods, r.identities, r.entries, r.parse_ms, r.compile_ms
        );
        last = Some(c);
    }
    let c = last.expect("ran");
    // Simulate: 1,000,000 flows over pod pairs, ports and protocols, with
    // pods named as a user would; verdicts counted so the work is kept.
    let names: Vec<&str> = c.endpoints.iter().map(|e| e.name.as_str()).collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let flows: Vec<Flow> = (0..1_000_000)
        .map(|_| {
            // Arguments are evaluated in order: the same flows as ever.
            Flow::new(
                PeerRef::Pod(names[next() as usize % names.len()].to_owned()),
                PeerRef::Pod(names[next() as usize % names.len()].to_owned()),
                [8080, 8443, 5432, 9050, 80][next() as usize % 5],
                if next() % 4 == 0 { 17 } else { 6 },
            )
        })
        .collect();
    let mut best = f64::MAX;
    let mut allowed = 0;
    for _ in 0..3 {
        let t = Instant::now();
        allowed = flows
            .iter()
            .filter(|f| {
                simulate(&c, f)
                    .expect("every flow names known pods")
                    .verdict
                    == simulator::flow::Verdict::Allowed
            })
            .count();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "\nsimulate, flows naming pods (resolve + judge): {} flows in {:.0} ms = {:.2} M flows/s single-threaded ({} allowed)",
        flows.len(),
        best * 1e3,
        flows.len() as f64 / best / 1e6,
        allowed
    );
    let resolved: Vec<simulator::eval::Resolved> = flows
        .iter()
        .map(|f| simulator::eval::resolve_flow(&c, f).expect("known pods"))
        .collect();
    let mut best = f64::MAX;
    let mut allowed2 = 0;
    for _ in 0..3 {
        let t = Instant::now();
        allowed2 = resolved
            .iter()
            .filter(|f| simulator::eval::judge(&c, f).verdict == simulator::flow::Verdict::Allowed)
            .count();
        best = best.min(t.elapsed().as_secs_f64());
    }
    assert_eq!(allowed, allowed2);
    println!(
        "simulate, resolved flows (judge only: ipcache + policy-map lookups): {} flows in {:.0} ms = {:.2} M flows/s",
        resolved.len(),
        best * 1e3,
        resolved.len() as f64 / best / 1e6
    );
}
