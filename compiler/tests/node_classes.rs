//! A policy map depends on its node only through the `fromNodes`/`toNodes`
//! selectors that match that node (which it then sees as `host`): pods of
//! one identity on nodes alike share a map, and so do host endpoints; a
//! node a selector tells apart gets its own.

use compiler::compile::{compile, Compiled, Config};
use compiler::identity::HOST;
use compiler::inventory;
use policy_lang::{parse_source, LoadOptions};

fn inventory_text() -> String {
    let mut s = String::from("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n");
    for (i, zone) in ["z0", "z0", "z1"].iter().enumerate() {
        s.push_str(&format!(
            "- {{apiVersion: v1, kind: Node, metadata: {{name: n{i}, labels: {{zone: {zone}}}}}, status: {{addresses: [{{type: InternalIP, address: 192.168.0.{}}}]}}}}\n",
            i + 1
        ));
        s.push_str(&format!(
            "- {{apiVersion: v1, kind: Pod, metadata: {{name: web{i}, namespace: a, labels: {{app: web}}}}, spec: {{nodeName: n{i}, containers: [{{name: c}}]}}, status: {{podIP: 10.0.0.{}}}}}\n",
            i + 10
        ));
    }
    s
}

fn build(policies: &str) -> Compiled {
    let mut opts = LoadOptions::default();
    opts.validate.node_selector_labels = true;
    let mut loaded = parse_source("p.yaml", policies, &opts);
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    let mut diags = Vec::new();
    let inv = inventory::parse_str(
        "inv.yaml",
        &inventory_text(),
        &mut loaded.sources,
        &mut diags,
    );
    let cfg = Config {
        node_selector_labels: true,
        ..Config::default()
    };
    let (c, d) = compile(&loaded.set, &loaded.sources, &inv, &cfg);
    assert!(d.iter().all(|d| !d.is_error()), "{d:?}");
    c
}

fn map_of(c: &Compiled, name: &str) -> usize {
    c.endpoint(name).unwrap_or_else(|| panic!("{name}")).map
}

/// Egress to `host`: ingress from it is always allowed (allow-localhost).
fn allows_host(c: &Compiled, name: &str) -> bool {
    c.maps[map_of(c, name)]
        .lookup(HOST, true, 6, 80)
        .is_some_and(|h| !h.entry.deny)
}

const TO_Z0_NODES: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  egress:\n  - toNodes: [{matchLabels: {zone: z0}}]\n";

#[test]
fn pods_on_nodes_a_selector_treats_alike_share_a_map() {
    let c = build(TO_Z0_NODES);
    // The local node is `host` where it is in zone z0.
    assert!(allows_host(&c, "a/web0"));
    assert!(allows_host(&c, "a/web1"));
    assert!(!allows_host(&c, "a/web2"));
    assert_eq!(map_of(&c, "a/web0"), map_of(&c, "a/web1"));
    assert_ne!(map_of(&c, "a/web0"), map_of(&c, "a/web2"));
}

#[test]
fn the_host_entity_does_not_split_maps_by_node() {
    let c = build("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  egress:\n  - toEntities: [host]\n");
    assert!(["a/web0", "a/web1", "a/web2"]
        .iter()
        .all(|p| allows_host(&c, p)));
    assert_eq!(map_of(&c, "a/web0"), map_of(&c, "a/web2"));
}

#[test]
fn host_endpoints_of_nodes_alike_share_a_map() {
    let host_policy = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: h}\nspec:\n  nodeSelector: {}\n  ingress:\n  - fromNodes: [{matchLabels: {zone: z0}}]\n    toPorts: [{ports: [{port: \"22\", protocol: TCP}]}]\n";
    let c = build(&format!("{TO_Z0_NODES}---\n{host_policy}"));
    let (h0, h1, h2) = (
        map_of(&c, "node/n0"),
        map_of(&c, "node/n1"),
        map_of(&c, "node/n2"),
    );
    assert_eq!(h0, h1);
    assert_ne!(h0, h2);
    // n0's own address is `host` to it: allowed on 22 from itself.
    let ssh = |m: usize| {
        c.maps[m]
            .lookup(HOST, false, 6, 22)
            .is_some_and(|h| !h.entry.deny)
    };
    assert!(ssh(h0));
    assert!(!ssh(h2));
}
