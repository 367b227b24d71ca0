//! Benchmark: load and validate 10,000 generated policies (~20 MB of YAML).
//!
//! Run with `cargo bench -p policy-lang --bench validate`. Prints, side by
//! side for the same text: the YAML parser alone (saphyr-parser events, the
//! floor for any spanned front end on this parser) and sluice's full
//! pipeline (tree, decode, validate). The best of several runs is reported.

use std::time::{Duration, Instant};

// The same allocator as the `sluice` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn policy(i: usize) -> String {
    let ns = format!("team-{}", i % 50);
    format!(
        r#"---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: app-{i}
  namespace: {ns}
  labels:
    owner: team-{t}
    generated: "true"
spec:
  description: "generated policy {i} for the benchmark: frontend, API and egress rules"
  endpointSelector:
    matchLabels:
      app: app-{i}
      tier: backend
    matchExpressions:
    - key: env
      operator: In
      values: [prod, staging]
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: frontend-{i}
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: monitoring
        app: prometheus
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
      - port: "9000"
        endPort: 9100
        protocol: TCP
      rules:
        http:
        - method: GET
          path: "/api/v1/items/[0-9]+"
        - method: POST
          path: /api/v1/orders
          headers:
          - "X-Request-Id"
  - fromEntities:
    - host
    - remote-node
    toPorts:
    - ports:
      - port: "9090"
        protocol: TCP
  - fromCIDRSet:
    - cidr: 10.{a}.0.0/16
      except:
      - 10.{a}.{b}.0/24
  egress:
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: kube-system
        k8s:k8s-app: kube-dns
    toPorts:
    - ports:
      - port: "53"
        protocol: ANY
      rules:
        dns:
        - matchPattern: "*.svc.cluster.local"
        - matchName: api-{i}.example.com
  - toFQDNs:
    - matchName: api-{i}.example.com
    toPorts:
    - ports:
      - port: "443"
        protocol: TCP
  - toEndpoints:
    - matchLabels:
        app: db-{i}
    toPorts:
    - ports:
      - port: "5432"
        protocol: TCP
  egressDeny:
  - toCIDR:
    - 169.254.169.254/32
"#,
        t = i % 7,
        a = i % 250,
        b = (i / 250) % 250,
    )
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("at least one run")
}

fn main() {
    let n = 10_000;
    let text: String = (0..n).map(policy).collect();
    let mb = text.len() as f64 / 1e6;
    // To time the CLI on the same input: SLUICE_BENCH_WRITE=/tmp/p.yaml.
    if let Some(path) = std::env::var_os("SLUICE_BENCH_WRITE") {
        std::fs::write(&path, &text).expect("write benchmark input");
    }
    let opts = policy_lang::LoadOptions::default();

    let check = policy_lang::parse_source("bench.yaml", &text, &opts);
    assert_eq!(check.set.policies.len(), n);
    assert_eq!(check.error_count(), 0, "generated policies must be valid");

    let events = best_of(3, || {
        let mut count = 0usize;
        for ev in saphyr_parser::Parser::new_from_str(&text) {
            ev.expect("valid yaml");
            count += 1;
        }
        std::hint::black_box(count);
    });
    let full = best_of(5, || {
        let loaded = policy_lang::parse_source("bench.yaml", &text, &opts);
        std::hint::black_box(loaded.set.policies.len());
    });
    println!("input: {n} policies, {mb:.1} MB of YAML");
    println!("{:<44} {:>10} {:>10}", "pipeline", "time", "MB/s");
    for (name, d) in [
        ("saphyr-parser events only (floor)", events),
        ("sluice: parse + decode + validate", full),
    ] {
        println!(
            "{name:<44} {:>8.0}ms {:>10.1}",
            d.as_secs_f64() * 1e3,
            mb / d.as_secs_f64()
        );
    }
}
