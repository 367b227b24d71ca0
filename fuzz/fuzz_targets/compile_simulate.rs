//! Policies that validate are compiled over a fixed small cluster and
//! flows are judged; an input with errors is never compiled (the CLI's
//! rule: nothing invalid is enforced as "allow").
#![no_main]
use libfuzzer_sys::fuzz_target;

const INVENTORY: &str = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: default}}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: default, labels: {app: a}}\n  spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}\n  status: {podIP: 10.0.0.1}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: b, namespace: default, labels: {app: b}}\n  spec: {nodeName: n1, containers: [{name: c}]}\n  status: {podIP: 10.0.0.2}\n";

const FLOWS: &str = "- {from: default/a, to: default/b, port: 80/TCP}\n- {from: default/b, to: default/a, port: http}\n- {from: 8.8.8.8, to: default/a, port: 443/TCP}\n- {from: default/a, to: world, port: 53/UDP}\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut loaded = policy_lang::parse_source("fuzz.yaml", text, &policy_lang::LoadOptions::default());
    if loaded.error_count() > 0 {
        return;
    }
    let mut diags = Vec::new();
    let inv = compiler::inventory::parse_str("inv.yaml", INVENTORY, &mut loaded.sources, &mut diags);
    let (c, _) = compiler::compile::compile(&loaded.set, &loaded.sources, &inv, &compiler::compile::Config::default());
    let mut fd = Vec::new();
    for f in simulator::flow::parse_yaml(FLOWS, policy_lang::source::FileId(0), &mut fd) {
        let _ = simulator::eval::simulate(&c, &f);
    }
    // What the agent would load decodes again.
    assert!(compiler::artifact::decode(&compiler::artifact::encode(&c)).is_ok());
});
