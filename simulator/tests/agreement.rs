//! Differential property test: the compiled state's lookups (what the
//! datapath will do) and the reference evaluator (what the policies mean)
//! give the same verdict for random flows over random policies and
//! inventories. 500 cases × 200 flows = 100,000 flows per run; proptest
//! shrinks any disagreement to a minimal case, to be kept as a fixture
//! under `fixtures/simulate/`.

use compiler::compile::{compile, Config};
use compiler::model::normalize;
use policy_lang::ir::PolicySet;
use policy_lang::source::SourceMap;
use proptest::collection::vec;
use proptest::prelude::*;
use simulator::eval::simulate;
use simulator::flow::Flow;
use simulator::reference::Reference;
use simulator::testgen::{inventory, peer_ref, pod_strategy, policy};

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn compiled_lookup_agrees_with_reference(
        pods in vec(pod_strategy(), 1..9),
        ns_team in vec(0..2usize, 3),
        policies in vec(policy(), 0..5),
        flows in vec((0..64usize, 0..10u8, 0..64usize, 0..10u8, 0..7usize, 0..3u8), 200),
    ) {
        let inv = inventory(pods, ns_team);
        let set = PolicySet { policies };
        let sources = SourceMap::new();
        let cfg = Config::default();
        let (compiled, _) = compile(&set, &sources, &inv, &cfg);
        let model = normalize(&set, &sources, &inv.services, &cfg.model);
        let reference = Reference { model: &model, inv: &inv, cfg: &cfg };
        let names: Vec<String> = inv.pods.iter().map(|p| p.qualified_name()).collect();
        for (a, ak, b, bk, port, proto) in flows {
            let (protocol, port) = match proto {
                0 => (6, [80, 81, 53, 8080, 8050, 9090, 0][port]),
                1 => (17, [80, 81, 53, 8080, 8050, 9090, 0][port]),
                _ => (1, 8),
            };
            let flow = Flow::new(peer_ref(&names, a, ak), peer_ref(&names, b, bk), port, protocol);
            let outcome = simulate(&compiled, &flow).expect("peers exist");
            let want = reference.verdict(&flow).expect("peers exist");
            prop_assert_eq!(outcome.verdict, want, "flow {} → {} {}/{}", flow.from, flow.to, flow.port, flow.protocol);
            // Policies in audit mode: the compiled audit maps and the
            // reference's "enforced, would it drop?" agree too.
            let audited = reference.audited(&flow).expect("peers exist");
            prop_assert_eq!(outcome.audit.is_some(), audited, "audit of flow {} → {} {}/{}", flow.from, flow.to, flow.port, flow.protocol);
        }
    }
}
