//! The L7 automata of one compile share a total budget, and a rule set
//! that does not fit fails once, not once per port that carries it.

use compiler::compile::{compile, Config};
use compiler::inventory;
use policy_lang::diag::Code;
use policy_lang::{parse_source, LoadOptions};

const INVENTORY: &str = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: x, namespace: a, labels: {app: x}}\n  spec: {nodeName: n1, containers: [{name: c}]}\n  status: {podIP: 10.0.0.10}\n";

/// One policy with an HTTP rule `path` on each of `ports`.
fn policy(ports: &[u16], path: &str) -> String {
    let mut text = String::from(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {}\n  ingress:\n",
    );
    for (i, p) in ports.iter().enumerate() {
        text.push_str(&format!(
            "  - toPorts:\n    - ports: [{{port: \"{p}\", protocol: TCP}}]\n      rules:\n        http: [{{path: \"{path}{i}\"}}]\n"
        ));
    }
    text
}

fn l7_errors(text: &str, total: usize) -> Vec<String> {
    let mut loaded = parse_source("p.yaml", text, &LoadOptions::default());
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    let mut d = Vec::new();
    let inv = inventory::parse_str("inv.yaml", INVENTORY, &mut loaded.sources, &mut d);
    let cfg = Config {
        l7_total_limit: total,
        ..Config::default()
    };
    let (_, diags) = compile(&loaded.set, &loaded.sources, &inv, &cfg);
    diags
        .into_iter()
        .filter(|d| d.code == Code::L7Automaton)
        .map(|d| d.message)
        .collect()
}

#[test]
fn the_total_of_all_automata_is_bounded() {
    // Eight ports of a small automaton each (about 5 KB).
    let ports: Vec<u16> = (8000..8008).collect();
    let text = policy(&ports, "/api/v[0-9]{1,3}/items/[a-z0-9]{1,12}/");
    assert!(l7_errors(&text, compiler::l7::DEFAULT_TOTAL_LIMIT).is_empty());
    let errors = l7_errors(&text, 16 << 10);
    assert!(!errors.is_empty(), "a 16 KiB budget cannot hold them");
    assert!(
        errors.iter().any(|e| e.contains("total")),
        "the error names the total budget: {errors:?}"
    );
}
