//! Benchmark of `diff` (issue: two versions of 5,000 policies over 20,000
//! pods, one policy edited and 100 edited, in ≤ 2 s end to end).
//!
//! `cargo bench -p simulator --bench diff` prints, per size and edit, the
//! time to parse and compile each side (in parallel, as `sluice diff`
//! does) and to diff. `SLUICE_BENCH_DIR=dir` also writes the largest
//! input and its two edits there, for timing the CLI end to end.

use compiler::compile::{compile, Compiled, Config};
use compiler::inventory;
use simulator::diff::{diff, Kind, State};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod gen;

/// The policies with the first `n` NetworkPolicies edited: their port
/// 8080 moves to 8081 (a port change a review must see: 8080 closes and
/// 8081 opens, for the pods of the team's namespaces whose egress is open).
fn edited(text: &str, n: usize) -> String {
    let mut left = n;
    text.split_inclusive("---\n")
        .map(|doc| {
            if left > 0 && doc.contains("kind: NetworkPolicy") {
                left -= 1;
                doc.replace("{port: 8080}", "{port: 8081}")
            } else {
                doc.to_owned()
            }
        })
        .collect()
}

fn compiled(pol: &str, inv: &str) -> Compiled {
    let loaded = policy_lang::parse_source("policies.yaml", pol, &Default::default());
    assert_eq!(loaded.error_count(), 0, "generated policies are valid");
    let mut sources = loaded.sources.clone();
    let mut diags = Vec::new();
    let inv = inventory::parse_str("inventory.yaml", inv, &mut sources, &mut diags);
    let (c, _) = compile(&loaded.set, &sources, &inv, &Config::default());
    c
}

fn main() {
    println!(" policies    pods  edited  compile both ms  diff ms  total ms  changes (opened/closed)  pairs judged");
    let sizes: Vec<(usize, usize)> = match std::env::var("SLUICE_BENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .filter_map(|p| {
                let (a, b) = p.split_once('x')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect(),
        Err(_) => vec![(1250, 20000), (5000, 5000), (5000, 10000), (5000, 20000)],
    };
    for (policies, pods) in sizes {
        let inv = gen::inventory_yaml(pods);
        let base = gen::policies_yaml(policies, pods.div_ceil(200));
        for n in [1, 100] {
            let head = edited(&base, n);
            if let Some(dir) = std::env::var_os("SLUICE_BENCH_DIR") {
                let dir = std::path::PathBuf::from(dir);
                let _ = std::fs::create_dir_all(dir.join("base"));
                let _ = std::fs::create_dir_all(dir.join(format!("head-{n}")));
                let _ = std::fs::write(dir.join("inventory.yaml"), &inv);
                let _ = std::fs::write(dir.join("base/policies.yaml"), &base);
                let _ = std::fs::write(dir.join(format!("head-{n}/policies.yaml")), &head);
            }
            let t = Instant::now();
            let (a, b) = std::thread::scope(|s| {
                let a = s.spawn(|| compiled(&base, &inv));
                let b = compiled(&head, &inv);
                (a.join().expect("base compiles"), b)
            });
            let compile_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let d = diff(State { compiled: &a }, State { compiled: &b });
            let diff_ms = t.elapsed().as_secs_f64() * 1e3;
            assert!(
                !d.is_empty(),
                "an edit changes something: {policies} × {pods}, {n} edited"
            );
            println!(
                "{policies:>9} {pods:>7} {n:>7} {compile_ms:>16.0} {diff_ms:>8.0} {:>9.0}  {:>10}/{:<12} {:>12}",
                compile_ms + diff_ms,
                d.count(Kind::Opened),
                d.count(Kind::Closed),
                d.pairs_judged
            );
        }
    }
}
