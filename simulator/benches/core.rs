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
use std::fmt::Write;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APPS: usize = 20;

fn inventory_yaml(pods: usize) -> String {
    let per_ns = 200.min(pods);
    let namespaces = pods.div_ceil(per_ns);
    let mut s = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for n in 0..namespaces {
        let _ = writeln!(s, "- {{apiVersion: v1, kind: Namespace, metadata: {{name: ns{n}, labels: {{team: t{}}}}}}}", n % 7);
    }
    for i in 0..50 {
        let _ = writeln!(s, "- {{apiVersion: v1, kind: Node, metadata: {{name: node{i}}}, status: {{addresses: [{{type: InternalIP, address: 192.168.{}.{}}}]}}}}", i / 200, i % 200 + 1);
    }
    for p in 0..pods {
        let (n, k) = (p / per_ns, p % per_ns);
        let _ = writeln!(
            s,
            "- {{apiVersion: v1, kind: Pod, metadata: {{name: pod{k}, namespace: ns{n}, labels: {{app: app{}, pod-template-hash: h{k}}}}}, spec: {{nodeName: node{}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}, status: {{podIP: 10.{}.{}.{}}}}}",
            k % APPS,
            p % 50,
            n / 250,
            n % 250,
            k + 1
        );
    }
    s
}

fn policies_yaml(policies: usize, namespaces: usize) -> String {
    let mut s = String::new();
    for i in 0..policies {
        let n = i % namespaces;
        let a = (i / namespaces) % APPS;
        if i % 10 == 9 {
            let _ = write!(
                s,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: ns{n}}}\nspec:\n  podSelector: {{matchLabels: {{app: app{a}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n    ports: [{{port: 8080}}, {{port: 9000, endPort: 9100}}]\n",
                i % 7
            );
            continue;
        }
        let _ = write!(
            s,
            "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p{i}, namespace: ns{n}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: app{a}}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: app{}}}}}]\n    toPorts: [{{ports: [{{port: \"8080\", protocol: TCP}}, {{port: http}}]}}]\n  - fromEndpoints: [{{matchLabels: {{app: app{}, k8s:io.kubernetes.pod.namespace: ns{}}}}}]\n    toPorts: [{{ports: [{{port: \"8443\", protocol: TCP}}]}}]\n  egress:\n  - toEndpoints: [{{matchLabels: {{app: app{}}}}}]\n    toPorts: [{{ports: [{{port: \"5432\", protocol: TCP}}]}}]\n  - toCIDRSet: [{{cidr: 172.{}.0.0/16, except: [172.{}.1.0/24]}}]\n  - toEntities: [kube-apiserver]\n",
            (a + 1) % APPS,
            (a + 2) % APPS,
            (n + 1) % namespaces,
            (a + 3) % APPS,
            16 + i % 16,
            16 + i % 16
        );
    }
    s
}

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
        .map(|_| Flow {
            from: PeerRef::Pod(names[next() as usize % names.len()].to_owned()),
            to: PeerRef::Pod(names[next() as usize % names.len()].to_owned()),
            port: [8080, 8443, 5432, 9050, 80][next() as usize % 5],
            protocol: if next() % 4 == 0 { 17 } else { 6 },
            expect: None,
            loc: Default::default(),
            recorded: None,
            l7: None,
            replay: None,
            service: None,
            expanded: None,
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
