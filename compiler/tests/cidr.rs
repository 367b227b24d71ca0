//! CIDR rules compiled as Cilium compiles them: `/0` selects the world
//! identity of its family only, and `except` is prefix arithmetic.

use compiler::compile::{compile, Config};
use compiler::identity::{WORLD, WORLD_IPV4, WORLD_IPV6};
use compiler::inventory;
use policy_lang::{parse_source, LoadOptions};

const INVENTORY: &str = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: x, namespace: a, labels: {app: x}}\n  spec: {nodeName: n1, containers: [{name: c}]}\n  status: {podIP: 10.0.0.10}\n";

/// The egress identities the one pod's map allows on any port.
fn egress_ids(cidrs: &str, dual_stack: bool) -> Vec<u32> {
    let text = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: a}}\nspec:\n  endpointSelector: {{}}\n  egress:\n  - toCIDRSet: {cidrs}\n"
    );
    let mut loaded = parse_source("p.yaml", &text, &LoadOptions::default());
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    let mut diags = Vec::new();
    let inv = inventory::parse_str("inv.yaml", INVENTORY, &mut loaded.sources, &mut diags);
    let cfg = Config {
        dual_stack,
        ..Config::default()
    };
    let (c, d) = compile(&loaded.set, &loaded.sources, &inv, &cfg);
    assert!(d.iter().all(|d| !d.is_error()), "{d:?}");
    let map = &c.maps[c.endpoint("a/x").expect("pod").map];
    map.entries
        .iter()
        .filter(|(k, e)| k.egress && !e.deny)
        .map(|(k, _)| k.identity)
        .collect()
}

#[test]
fn slash_zero_selects_the_world_of_its_family() {
    assert_eq!(egress_ids("[{cidr: 0.0.0.0/0}]", false), vec![WORLD]);
    assert_eq!(egress_ids("[{cidr: 0.0.0.0/0}]", true), vec![WORLD_IPV4]);
    assert_eq!(egress_ids("[{cidr: '::/0'}]", true), vec![WORLD_IPV6]);
}

#[test]
fn slash_zero_minus_itself_allows_nothing() {
    assert!(egress_ids("[{cidr: 0.0.0.0/0, except: [0.0.0.0/0]}]", false).is_empty());
    assert!(egress_ids("[{cidr: '::/0', except: ['::/0']}]", true).is_empty());
}

#[test]
fn except_is_expanded_into_prefixes_without_world() {
    // 0/0 minus one /24: the 24 prefixes left, each a CIDR identity, and
    // not the world identity (which the excepted addresses get).
    let ids = egress_ids("[{cidr: 0.0.0.0/0, except: [8.8.8.0/24]}]", false);
    assert_eq!(ids.len(), 24, "{ids:?}");
    assert!(!ids.contains(&WORLD));
}
