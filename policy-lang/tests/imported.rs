//! `cilium policy import` rule arrays: one cluster-wide policy per file,
//! named after it, checked as a CCNP's rules, and rendered as one.

use policy_lang::{parse_source, render::render_set, LoadOptions};

#[test]
fn a_rule_array_is_one_policy_named_after_its_file_and_round_trips() {
    let text = r#"[{"endpointSelector": {"matchLabels": {"app": "db"}},
  "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "web"}}],
               "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}]}]}]"#;
    let opts = LoadOptions::default();
    let first = parse_source("rules/Backup Rules.json", text, &opts);
    assert_eq!(first.error_count(), 0, "{:?}", first.diagnostics);
    assert_eq!(first.set.policies.len(), 1);
    let p = &first.set.policies[0];
    assert_eq!(p.name.value, "backup-rules");
    assert_eq!(p.kind.to_string(), "CiliumClusterwideNetworkPolicy");
    let second = parse_source("rendered.yaml", &render_set(&first.set), &opts);
    assert_eq!(second.error_count(), 0, "{:?}", second.diagnostics);
    assert_eq!(first.set, second.set);
    // Checked as a CCNP's rules: what the API server would refuse in a
    // CCNP is refused here too.
    let bad = parse_source(
        "r.json",
        r#"[{"endpointSelector": {}, "egress": [{"toEntities": ["world-ipv4"]}]}]"#,
        &opts,
    );
    assert!(bad.error_count() > 0);
    // A list of something else is still not an object.
    let other = parse_source("r.json", "[1, 2]", &opts);
    assert!(other
        .diagnostics
        .iter()
        .any(|d| d.code.name() == "not-an-object"));
}
